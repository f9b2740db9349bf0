//! Scripted node pressure: the MemoryPressure, DiskPressure and PIDPressure conditions a kubelet
//! reports when its eviction thresholds are crossed, with the kubelet's reasons and messages.
//! The node stays Ready (and keeps its Lease); the node-lifecycle controller then taints it
//! `node.kubernetes.io/memory-pressure:NoSchedule` (and disk-, pid-).
//!
//! Asked for by the node annotation `mock-kind.io/health` (a comma-separated list of the
//! condition types, e.g. `MemoryPressure,DiskPressure`) or by `--fault-condition` for the
//! fault schedule's unhealthy windows.

use thiserror::Error;

/// Which pressure conditions are True.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressures {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0:?} is not a list of MemoryPressure, DiskPressure, PIDPressure")]
pub struct NotPressures(String);

/// Longest value looked at: three names and their commas.
const MAX_LEN: usize = 64;

impl Pressures {
    /// `MemoryPressure`, `DiskPressure`, `PIDPressure`, comma-separated (spaces allowed, each
    /// at least once); anything else is not a pressure list.
    pub fn parse(value: &str) -> Result<Self, NotPressures> {
        let bad = || NotPressures(value.chars().take(MAX_LEN).collect());
        if value.len() > MAX_LEN {
            return Err(bad());
        }
        let mut p = Pressures::default();
        for item in value.split(',') {
            let flag = match item.trim() {
                "MemoryPressure" => &mut p.memory,
                "DiskPressure" => &mut p.disk,
                "PIDPressure" => &mut p.pid,
                _ => return Err(bad()),
            };
            *flag = true;
        }
        Ok(p)
    }

    /// The three conditions as the kubelet reports them: (type, status, reason, message).
    pub fn conditions(self) -> [(&'static str, &'static str, &'static str, &'static str); 3] {
        let pick = |on: bool, yes, no| if on { yes } else { no };
        [
            pick(
                self.memory,
                (
                    "MemoryPressure",
                    "True",
                    "KubeletHasInsufficientMemory",
                    "kubelet has insufficient memory available",
                ),
                (
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
            ),
            pick(
                self.disk,
                (
                    "DiskPressure",
                    "True",
                    "KubeletHasDiskPressure",
                    "kubelet has disk pressure",
                ),
                (
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
            ),
            pick(
                self.pid,
                (
                    "PIDPressure",
                    "True",
                    "KubeletHasInsufficientPID",
                    "kubelet has insufficient PID available",
                ),
                (
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
            ),
        ]
    }
}

/// `--fault-condition`: `Ready` (the schedule makes nodes NotReady) or a pressure list.
pub fn parse_fault_condition(value: &str) -> Result<Option<Pressures>, NotPressures> {
    if value == "Ready" {
        return Ok(None);
    }
    Pressures::parse(value).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let p = |memory, disk, pid| Pressures { memory, disk, pid };
        let cases: &[(&str, &str, Option<Pressures>)] = &[
            ("memory", "MemoryPressure", Some(p(true, false, false))),
            ("disk", "DiskPressure", Some(p(false, true, false))),
            ("pid", "PIDPressure", Some(p(false, false, true))),
            (
                "list with spaces",
                "MemoryPressure, PIDPressure",
                Some(p(true, false, true)),
            ),
            (
                "repeated",
                "DiskPressure,DiskPressure",
                Some(p(false, true, false)),
            ),
            ("NotReady is no pressure", "NotReady", None),
            ("empty", "", None),
            ("trailing comma", "MemoryPressure,", None),
            ("case matters", "memorypressure", None),
            ("one bad item", "MemoryPressure,Broken", None),
        ];
        for (name, value, want) in cases {
            assert_eq!(Pressures::parse(value).ok(), *want, "{name}");
        }
        assert_eq!(parse_fault_condition("Ready"), Ok(None));
        assert_eq!(
            parse_fault_condition("PIDPressure"),
            Ok(Some(p(false, false, true)))
        );
        assert!(parse_fault_condition("ready").is_err());
    }

    #[test]
    fn conditions_follow_the_flags() {
        let all = Pressures {
            memory: true,
            disk: true,
            pid: true,
        };
        for (on, want) in [(Pressures::default(), "False"), (all, "True")] {
            let types: Vec<&str> = on.conditions().iter().map(|c| c.0).collect();
            assert_eq!(types, ["MemoryPressure", "DiskPressure", "PIDPressure"]);
            assert!(on.conditions().iter().all(|c| c.1 == want));
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_is_total_and_bounded(value in "\\PC{0,200}") {
            if let Err(e) = Pressures::parse(&value) {
                // The error keeps a bounded prefix of the value, whatever its length.
                proptest::prop_assert!(e.0.chars().count() <= MAX_LEN);
            }
        }

        #[test]
        fn lists_round_trip(memory: bool, disk: bool, pid: bool) {
            let names: Vec<&str> = [(memory, "MemoryPressure"), (disk, "DiskPressure"), (pid, "PIDPressure")]
                .into_iter()
                .filter_map(|(on, n)| on.then_some(n))
                .collect();
            let got = Pressures::parse(&names.join(","));
            if names.is_empty() {
                proptest::prop_assert!(got.is_err());
            } else {
                proptest::prop_assert_eq!(got, Ok(Pressures { memory, disk, pid }));
            }
        }
    }
}
