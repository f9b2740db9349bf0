//! What the fault proxy does to each connection and each request: a seeded draw turned into a
//! verdict. Plain data in and out, no I/O, so a seed replays the same faults in the same order.

use std::time::Duration;

/// Shares (0.0–1.0) of connections and requests that meet each fault. Connection shares are
/// taken in the order listed, as are request shares: if they add up to more than 1 the later
/// ones get what is left.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultRates {
    /// New connections reset (RST) right after they are accepted, before the TLS handshake.
    pub reset_on_accept: f64,
    /// Connections reset at a random moment of their life, mid-request or idle in a pool.
    pub cut_live: f64,
    /// Requests answered `429 Too Many Requests` with `Retry-After`, as apiserver's
    /// max-in-flight filter does.
    pub too_many_requests: f64,
    /// Requests answered `500 Internal Server Error`.
    pub server_error: f64,
    /// Requests passed to the apiserver whose connection is then reset once the answer's head
    /// is back: the write happened, the client never learns (a watch is cut mid-stream).
    pub reset_mid_request: f64,
}

impl FaultRates {
    /// No faults: every connection and request goes through.
    pub const NONE: FaultRates = FaultRates {
        reset_on_accept: 0.0,
        cut_live: 0.0,
        too_many_requests: 0.0,
        server_error: 0.0,
        reset_mid_request: 0.0,
    };
}

/// The earliest and latest moment a `cut_live` connection is reset, after it was accepted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CutWindow {
    pub earliest: Duration,
    pub latest: Duration,
}

impl Default for CutWindow {
    /// Long enough for the TLS handshake and a few requests, short enough that a pooled
    /// connection is cut while the client still relies on it. Under a busy client the other
    /// faults (a reset mid-request every ~30 requests) end most connections within seconds:
    /// with a 5 s end, a CI run saw no connection live long enough to be cut in 90 s.
    fn default() -> Self {
        CutWindow {
            earliest: Duration::from_millis(100),
            latest: Duration::from_millis(1500),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ConnVerdict {
    Reset,
    CutAfter(Duration),
    Keep,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestVerdict {
    TooManyRequests { retry_after_secs: u32 },
    ServerError,
    ResetAfterForward,
    Forward,
}

/// The Retry-After of injected 429s: apiserver's own answer under load says 1 s.
pub const RETRY_AFTER_SECS: u32 = 1;

fn share(x: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// The verdict on a new connection from two rolls in [0, 1): `pick` chooses the fault,
/// `when` places a cut inside the window.
pub fn connection(rates: &FaultRates, window: &CutWindow, pick: f64, when: f64) -> ConnVerdict {
    let reset = share(rates.reset_on_accept);
    let cut = reset + share(rates.cut_live);
    if pick < reset {
        ConnVerdict::Reset
    } else if pick < cut {
        let span = window.latest.saturating_sub(window.earliest);
        ConnVerdict::CutAfter(window.earliest + span.mul_f64(share(when)))
    } else {
        ConnVerdict::Keep
    }
}

/// The verdict on one request from a roll in [0, 1).
pub fn request(rates: &FaultRates, pick: f64) -> RequestVerdict {
    let busy = share(rates.too_many_requests);
    let failed = busy + share(rates.server_error);
    let reset = failed + share(rates.reset_mid_request);
    if pick < busy {
        RequestVerdict::TooManyRequests {
            retry_after_secs: RETRY_AFTER_SECS,
        }
    } else if pick < failed {
        RequestVerdict::ServerError
    } else if pick < reset {
        RequestVerdict::ResetAfterForward
    } else {
        RequestVerdict::Forward
    }
}

/// Which sequence a roll belongs to, so connection and request draws do not shift each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    ConnPick = 1,
    ConnWhen = 2,
    Request = 3,
}

/// Rolls in [0, 1) as a pure function of (seed, stream, index): the n-th connection or request
/// meets the same fault in every run with the same seed.
#[derive(Clone, Copy, Debug)]
pub struct Dice {
    pub seed: u64,
}

impl Dice {
    pub fn roll(&self, stream: Stream, n: u64) -> f64 {
        let x = splitmix64(
            self.seed ^ (stream as u64).wrapping_mul(0xA076_1D64_78BD_642F) ^ splitmix64(n),
        );
        // The top 53 bits make an f64 in [0, 1) with every value equally likely.
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RATES: FaultRates = FaultRates {
        reset_on_accept: 0.1,
        cut_live: 0.2,
        too_many_requests: 0.05,
        server_error: 0.1,
        reset_mid_request: 0.05,
    };

    #[test]
    fn connection_verdicts() {
        let w = CutWindow {
            earliest: Duration::from_secs(1),
            latest: Duration::from_secs(3),
        };
        let cases = [
            ("low roll resets", RATES, 0.0, 0.5, ConnVerdict::Reset),
            (
                "just under the reset share",
                RATES,
                0.099,
                0.5,
                ConnVerdict::Reset,
            ),
            (
                "cut at the start of the window",
                RATES,
                0.1,
                0.0,
                ConnVerdict::CutAfter(Duration::from_secs(1)),
            ),
            (
                "cut in the middle",
                RATES,
                0.29,
                0.5,
                ConnVerdict::CutAfter(Duration::from_secs(2)),
            ),
            ("past both shares", RATES, 0.31, 0.5, ConnVerdict::Keep),
            ("no faults", FaultRates::NONE, 0.0, 0.0, ConnVerdict::Keep),
            (
                "shares over 1 saturate",
                FaultRates {
                    reset_on_accept: 7.0,
                    ..FaultRates::NONE
                },
                0.999,
                0.0,
                ConnVerdict::Reset,
            ),
            (
                "NaN share is no fault",
                FaultRates {
                    reset_on_accept: f64::NAN,
                    ..FaultRates::NONE
                },
                0.0,
                0.0,
                ConnVerdict::Keep,
            ),
        ];
        for (name, rates, pick, when, want) in cases {
            assert_eq!(connection(&rates, &w, pick, when), want, "{name}");
        }
    }

    #[test]
    fn request_verdicts() {
        let busy = RequestVerdict::TooManyRequests {
            retry_after_secs: RETRY_AFTER_SECS,
        };
        let cases = [
            ("lowest roll is a 429", RATES, 0.0, busy),
            (
                "429 share ends at 0.05",
                RATES,
                0.05,
                RequestVerdict::ServerError,
            ),
            (
                "500 share ends at 0.15",
                RATES,
                0.149,
                RequestVerdict::ServerError,
            ),
            (
                "then resets, up to 0.2",
                RATES,
                0.19,
                RequestVerdict::ResetAfterForward,
            ),
            ("then forwarded", RATES, 0.21, RequestVerdict::Forward),
            ("no faults", FaultRates::NONE, 0.0, RequestVerdict::Forward),
            (
                "negative share is no fault",
                FaultRates {
                    server_error: -1.0,
                    ..FaultRates::NONE
                },
                0.0,
                RequestVerdict::Forward,
            ),
        ];
        for (name, rates, pick, want) in cases {
            assert_eq!(request(&rates, pick), want, "{name}");
        }
    }

    #[test]
    fn a_seed_injects_close_to_the_asked_share() {
        // Deterministic: the same seed gives the same draws, so this cannot flake.
        let dice = Dice { seed: 42 };
        let n = 20_000;
        let faulted = (0..n)
            .filter(|&i| request(&RATES, dice.roll(Stream::Request, i)) != RequestVerdict::Forward)
            .count();
        let got = faulted as f64 / n as f64;
        assert!((got - 0.2).abs() < 0.01, "share {got}");
    }

    proptest! {
        #[test]
        fn rolls_are_in_range_and_reproducible(seed: u64, n: u64) {
            let d = Dice { seed };
            for s in [Stream::ConnPick, Stream::ConnWhen, Stream::Request] {
                let r = d.roll(s, n);
                prop_assert!((0.0..1.0).contains(&r));
                prop_assert_eq!(r.to_bits(), Dice { seed }.roll(s, n).to_bits());
            }
        }

        #[test]
        fn verdicts_follow_the_shares(
            reset in -1.0..2.0f64, cut in -1.0..2.0f64, busy in -1.0..2.0f64,
            failed in -1.0..2.0f64, mid in -1.0..2.0f64, pick in 0.0..1.0f64,
            when in -1.0..2.0f64,
        ) {
            let rates = FaultRates {
                reset_on_accept: reset, cut_live: cut, too_many_requests: busy,
                server_error: failed, reset_mid_request: mid,
            };
            let w = CutWindow::default();
            match connection(&rates, &w, pick, when) {
                ConnVerdict::Reset => prop_assert!(pick < share(reset)),
                ConnVerdict::CutAfter(d) => {
                    prop_assert!(pick >= share(reset) && pick < share(reset) + share(cut));
                    prop_assert!(d >= w.earliest && d <= w.latest);
                }
                ConnVerdict::Keep => prop_assert!(pick >= share(reset) + share(cut)),
            }
            let forwarded = request(&rates, pick) == RequestVerdict::Forward;
            prop_assert_eq!(forwarded, pick >= share(busy) + share(failed) + share(mid));
        }
    }
}
