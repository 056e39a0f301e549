import unittest

from reference_agent.settings import SettingsError, load, redacted_url

BASE = {
    "AGENT_ID": "a1",
    "RABBITMQ_URL": "amqp://agent-a1:secret@10.0.0.1:5672/%2f",
    "REDIS_URL": "redis://agent-a1:secret@10.0.0.1:6379/0",
}


def env(**more: str) -> dict[str, str]:
    return {**BASE, **more}


class SettingsTest(unittest.TestCase):
    def test_defaults(self) -> None:
        s = load(env())
        self.assertEqual(s.exchange, "autogen")
        self.assertEqual(s.heartbeat_interval_s, 10)
        self.assertEqual(s.redis_prefix, "")
        self.assertIsNone(s.autogen_config)
        self.assertEqual(s.stop_grace_s, 8)

    def test_empty_autogen_config_means_no_team(self) -> None:
        self.assertIsNone(load(env(AUTOGEN_CONFIG="{}")).autogen_config)
        self.assertIsNone(load(env(AUTOGEN_CONFIG=" ")).autogen_config)

    def test_bad_values_are_named(self) -> None:
        cases = {
            "AUTOGEN_CONFIG": env(AUTOGEN_CONFIG="{not json"),
            "must be a JSON object": env(AUTOGEN_CONFIG="[1]"),
            "CONFIG.stop_grace_s": env(CONFIG='{"stop_grace_s": "soon"}'),
            "HEARTBEAT_INTERVAL_S": env(HEARTBEAT_INTERVAL_S="0"),
            "AGENT_ID": env(AGENT_ID="../x"),
            "RABBITMQ_URL": env(RABBITMQ_URL="http://x"),
            "REDIS_URL": env(REDIS_URL=""),
        }
        for name, e in cases.items():
            with self.subTest(name=name):
                with self.assertRaises(SettingsError) as ctx:
                    load(e)
                self.assertIn(name, str(ctx.exception))

    def test_exchange_from_environment_and_config(self) -> None:
        self.assertEqual(load(env(RABBITMQ_EXCHANGE="x1")).exchange, "x1")
        self.assertEqual(
            load(env(RABBITMQ_EXCHANGE="x1", CONFIG='{"exchange": "x2"}')).exchange, "x2"
        )

    def test_redacted_url_drops_credentials(self) -> None:
        self.assertEqual(
            redacted_url("amqp://agent-a1:secret@10.0.0.1:5672/%2f"), "amqp://10.0.0.1:5672/%2f"
        )
        self.assertNotIn("secret", redacted_url("redis://:secret@[::1]:6379/0"))


if __name__ == "__main__":
    unittest.main()
