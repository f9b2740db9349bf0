//! The benchmarks' settings from the environment, so a run can be made larger or shorter
//! without editing the bench.

/// `name` from the environment parsed as a `T`; `default` when unset or not a `T`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
