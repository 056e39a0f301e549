//! The process's own series, as Prometheus client libraries name them
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...), read from
//! `/proc/self` at each scrape (Linux; nothing elsewhere), and `agent_manager_build_info`.

use super::catalog::Metric;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`: 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// What `/proc/self` says about the process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessView {
    pub cpu_seconds: f64,
    pub resident_memory_bytes: f64,
    pub virtual_memory_bytes: f64,
    pub start_time_seconds: f64,
    pub open_fds: f64,
    pub max_fds: f64,
}

/// Reads `/proc/self`; `None` where it cannot (not Linux).
pub fn read() -> Option<ProcessView> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let (ticks, start_ticks) = stat_times(&stat)?;
    Some(ProcessView {
        cpu_seconds: ticks / TICKS_PER_S,
        resident_memory_bytes: status_kb(&status, "VmRSS:")? * 1024.0,
        virtual_memory_bytes: status_kb(&status, "VmSize:")? * 1024.0,
        start_time_seconds: boot_time(&boot)? + start_ticks / TICKS_PER_S,
        open_fds: open_fds as f64,
        max_fds: max_open_files(&limits).unwrap_or(0.0),
    })
}

/// utime + stime and starttime (ticks) from `/proc/self/stat`; the command name in
/// parentheses may hold spaces, so fields are counted after its closing one.
fn stat_times(stat: &str) -> Option<(f64, f64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 (index 0 here), utime 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    Some((field(14)? + field(15)?, field(22)?))
}

/// A `Name:   123 kB` line of `/proc/self/status`, in kB.
fn status_kb(status: &str, name: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `btime` of `/proc/stat`: the boot time, Unix seconds.
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<f64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Writes the process families (when `/proc/self` reads) and `agent_manager_build_info`.
pub fn render(out: &mut String, process: Option<ProcessView>, version: &str, commit: &str) {
    if let Some(p) = process {
        let families: [(Metric, f64); 6] = [
            (Metric::ProcessCpuSecondsTotal, p.cpu_seconds),
            (Metric::ProcessResidentMemoryBytes, p.resident_memory_bytes),
            (Metric::ProcessVirtualMemoryBytes, p.virtual_memory_bytes),
            (Metric::ProcessStartTimeSeconds, p.start_time_seconds),
            (Metric::ProcessOpenFds, p.open_fds),
            (Metric::ProcessMaxFds, p.max_fds),
        ];
        for (metric, value) in families {
            metric.family(out);
            metric.sample(out, [], value);
        }
    }
    Metric::BuildInfo.family(out);
    Metric::BuildInfo.sample(out, [version, commit], 1.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_read_even_with_spaces_in_the_name() {
        let stat = "4242 (agent (mgr) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 12 0 123456 1000 500";
        assert_eq!(stat_times(stat), Some((300.0, 123456.0)));
        let status = "Name:\tagent-manager\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(10240.0));
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1700000000\n"), Some(1.7e9));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 1048576              files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
    }

    #[test]
    fn this_process_reads_and_renders() {
        let p = read().expect("/proc/self on Linux");
        assert!(p.resident_memory_bytes > 0.0 && p.open_fds > 0.0, "{p:?}");
        let mut out = String::new();
        render(&mut out, Some(p), "0.1.0", "abc");
        assert!(out.contains("# TYPE process_cpu_seconds_total counter"));
        assert!(out.contains("agent_manager_build_info{version=\"0.1.0\",commit=\"abc\"} 1"));
    }
}
