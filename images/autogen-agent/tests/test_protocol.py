import json
import unittest

from reference_agent import protocol


class ProtocolTest(unittest.TestCase):
    def test_names(self) -> None:
        self.assertEqual(protocol.inbox_queue("a.1"), "agent:a.1:inbox")
        self.assertEqual(protocol.task_key("a.1"), "agent:a.1:task")
        self.assertEqual(protocol.result_key("a.1"), "agent:a.1:result")
        self.assertEqual(protocol.heartbeat_redis_key("p:", "a"), "p:agent:a:data:heartbeat")
        self.assertEqual(
            protocol.stored_result_redis_key("", "a", "t1"), "agent:a:data:result:t1"
        )

    def test_heartbeat(self) -> None:
        hb = json.loads(protocol.heartbeat("ok", "idle", now_ms=5))
        self.assertEqual(hb, {"ts": 5, "status": "ok", "detail": "idle"})
        self.assertEqual(protocol.heartbeat_ttl_ms(10), 30000)

    def test_parse_task(self) -> None:
        t = protocol.parse_task(b'{"task_id": "t1", "task": "hi", "extra": 1}')
        self.assertEqual((t.task_id, t.task, t.body["extra"]), ("t1", "hi", 1))

    def test_invalid_tasks(self) -> None:
        for body, task_id in [
            (b"not json", None),
            (b"[1]", None),
            (b'{"task": "x"}', None),
            (b'{"task_id": "t2"}', "t2"),
            (b"\xff", None),
        ]:
            with self.subTest(body=body):
                with self.assertRaises(protocol.InvalidTask) as ctx:
                    protocol.parse_task(body)
                self.assertEqual(ctx.exception.task_id, task_id)

    def test_task_id_of(self) -> None:
        self.assertEqual(protocol.task_id_of(b'{"task_id": "t1", "task": "x"}'), "t1")
        self.assertEqual(protocol.task_id_of(b'{"task_id": "t2"}'), "t2")
        self.assertIsNone(protocol.task_id_of(b"nope"))

    def test_result_has_error_only_when_failed(self) -> None:
        common = dict(
            task_id="t1",
            agent_id="a",
            messages=[],
            stop_reason=None,
            prompt_tokens=1,
            completion_tokens=2,
            started_at=0.0,
            finished_at=1.5,
        )
        ok = protocol.result(status=protocol.COMPLETED, **common)
        self.assertNotIn("error", ok)
        self.assertEqual(ok["usage"], {"prompt_tokens": 1, "completion_tokens": 2})
        self.assertEqual(ok["started_at"], "1970-01-01T00:00:00.000Z")
        self.assertEqual(ok["finished_at"], "1970-01-01T00:00:01.500Z")
        failed = protocol.result(status=protocol.FAILED, error="boom", **common)
        self.assertEqual(failed["error"], "boom")


if __name__ == "__main__":
    unittest.main()
