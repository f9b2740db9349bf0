//! Readings of a process from /proc, for benchmarks: CPU time and resident memory.

/// One field of /proc/<pid>/status, in kB (e.g. `VmRSS:`, `VmHWM:`).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kb(&s, field)
}

/// One field of a /proc/<pid>/status text, in kB.
fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resident set size in MB (0 when the process is gone).
pub fn rss_mb(pid: u32) -> f64 {
    status_kb(pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0
}

/// Peak resident set size in MB (0 when the process is gone).
pub fn peak_rss_mb(pid: u32) -> f64 {
    status_kb(pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0
}

/// User plus system CPU time in seconds (0 when the process is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    parse_stat_cpu(&s, clock_ticks())
}

/// The kernel's clock ticks per second, in which /proc reports CPU time.
#[allow(unsafe_code)]
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// utime + stime from a /proc/<pid>/stat line. The command (field 2) may hold spaces and
/// parentheses, so fields are counted after the last ')': utime and stime are fields 14 and 15,
/// i.e. the 12th and 13th after it.
fn parse_stat_cpu(stat: &str, hz: f64) -> f64 {
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / hz
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn status_fields() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nVmBad:\tmany kB\n";
        let cases = [
            ("VmRSS:", Some(1024)),
            ("VmHWM:", Some(2048)),
            ("VmSwap:", None),
            ("VmBad:", None),
        ];
        for (field, want) in cases {
            assert_eq!(parse_status_kb(status, field), want, "{field}");
        }
    }

    proptest! {
        #[test]
        fn status_never_panics(text in "\\PC*", field in "[A-Za-z]{1,8}:") {
            let _ = parse_status_kb(&text, &field);
        }
    }

    #[test]
    fn stat_cpu() {
        let cases = [
            (
                "plain",
                "42 (etcd) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0",
                3.0,
            ),
            (
                "command with spaces and a paren",
                "7 (a b) c) R 1 7 7 0 -1 0 0 0 0 0 100 100 0 0 20 0 1 0",
                2.0,
            ),
            ("garbage", "nothing here", 0.0),
        ];
        for (name, line, want) in cases {
            let got = parse_stat_cpu(line, 100.0);
            assert!((got - want).abs() < 1e-9, "{name}: got {got}, want {want}");
        }
    }

    #[test]
    fn own_process() {
        let pid = std::process::id();
        // Both from one read: the kernel updates the peak lazily and other test threads allocate
        // and free between two reads, so RSS read first could exceed a peak read later (CI
        // caught that). Within one read it computes the peak as at least that read's RSS.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("own status");
        let rss = parse_status_kb(&status, "VmRSS:").expect("VmRSS");
        let hwm = parse_status_kb(&status, "VmHWM:").expect("VmHWM");
        assert!(rss > 0 && hwm >= rss, "VmRSS {rss} kB, VmHWM {hwm} kB");
        assert!(rss_mb(pid) > 0.0 && peak_rss_mb(pid) > 0.0);
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds(pid) > 0.0);
    }
}
