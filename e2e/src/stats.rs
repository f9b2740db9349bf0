//! The benchmarks' summary of interleaved runs: a median with its spread, never one run.

/// Median, minimum and maximum of `values` (zeros when empty).
pub fn median_and_spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (values, (median, min, max))
    type Case<'a> = (&'a [f64], (f64, f64, f64));

    #[test]
    fn median_and_spread_table() {
        let cases: &[Case<'_>] = &[
            (&[], (0.0, 0.0, 0.0)),
            (&[2.0], (2.0, 2.0, 2.0)),
            (&[3.0, 1.0, 2.0], (2.0, 1.0, 3.0)),
            (&[4.0, 1.0, 3.0, 2.0], (2.5, 1.0, 4.0)),
            (&[1.0, f64::NAN], (f64::NAN, 1.0, f64::NAN)),
        ];
        for (values, want) in cases {
            let got = median_and_spread(values.to_vec());
            let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
            assert!(
                same(got.0, want.0) && same(got.1, want.1) && same(got.2, want.2),
                "{values:?}: {got:?}"
            );
        }
    }
}
