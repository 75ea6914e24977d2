//! The standard `process_*` series (CPU, memory, file descriptors, start time), read from
//! `/proc/self` on Linux; elsewhere none are exported.

/// Registers the `# HELP` lines of the process series.
pub(crate) fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_counter!("process_cpu_seconds_total", Unit::Seconds, "User and system CPU time spent, in whole seconds.");
    describe_gauge!("process_virtual_memory_bytes", Unit::Bytes, "Virtual memory size.");
    describe_gauge!("process_resident_memory_bytes", Unit::Bytes, "Resident memory size.");
    describe_gauge!("process_start_time_seconds", Unit::Seconds, "Start time of the process since the Unix epoch.");
    describe_gauge!("process_open_fds", "Open file descriptors.");
    describe_gauge!("process_max_fds", "Maximum number of open file descriptors.");
}

/// Sets the process gauges and the CPU counter from `/proc/self`.
#[cfg(target_os = "linux")]
pub(crate) fn sample() {
    // Fields after the command name (which may hold spaces) in /proc/self/stat, from field 3
    // (state) on: utime is field 14, stime 15, starttime 22, vsize 23 (man 5 proc). The CPU counter
    // is in whole seconds: `metrics` counters are integers.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return };
    let Some(after_name) = stat.rfind(')').map(|at| &stat[at + 1..]) else { return };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|value| value.parse::<u64>().ok());
    let ticks_per_s = clock_ticks_per_second();
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        metrics::counter!("process_cpu_seconds_total").absolute((utime + stime) / ticks_per_s);
    }
    if let Some(vsize) = field(23) {
        metrics::gauge!("process_virtual_memory_bytes").set(vsize as f64);
    }
    if let Some(rss_bytes) = resident_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(rss_bytes as f64);
    }
    if let (Some(start_ticks), Some(boot_s)) = (field(22), boot_time_s()) {
        metrics::gauge!("process_start_time_seconds").set((boot_s + start_ticks / ticks_per_s) as f64);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("process_open_fds").set(fds.count() as f64);
    }
    if let Some(max) = max_open_files() {
        metrics::gauge!("process_max_fds").set(max as f64);
    }
}

/// No `/proc` to read.
#[cfg(not(target_os = "linux"))]
pub(crate) fn sample() {}

/// Linux reports times in USER_HZ, which is 100 on every architecture Rust targets.
#[cfg(target_os = "linux")]
fn clock_ticks_per_second() -> u64 {
    100
}

/// Resident memory (`VmRSS` in /proc/self/status, which is in kB whatever the page size).
#[cfg(target_os = "linux")]
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    line.split_whitespace().next()?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// When the machine booted, in Unix seconds (`btime` in /proc/stat).
#[cfg(target_os = "linux")]
fn boot_time_s() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|line| line.strip_prefix("btime ")).and_then(|value| value.trim().parse().ok())
}

/// The soft limit on open files, from /proc/self/limits.
#[cfg(target_os = "linux")]
fn max_open_files() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}
