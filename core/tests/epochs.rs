//! Epochs, key ids and rotation settings (`veil_core::crypto::keys`).
//!
//! Every Unix timestamp below was computed independently with Python 3.11's `datetime`
//! (`int(datetime(y, m, d, H, M, S, tzinfo=timezone.utc).timestamp())`) and pasted here; the
//! N = 5 / N = 24 start months were listed with the rule from the `Epoch` doc comment
//! (`(year * 12 + month - 1) % N == 0`) in Python as well.

use veil_core::crypto::keys::{Epoch, KeyError, Kid, RotationMonths};

fn n(months: u16) -> RotationMonths {
    RotationMonths::new(months).unwrap()
}

fn ep(s: &str) -> Epoch {
    s.parse().unwrap()
}

fn label(t: i64, months: u16) -> String {
    Epoch::containing(t, n(months)).to_string()
}

/// (year, month, unix seconds at 00:00:00 UTC on the 1st), from Python.
const MONTH_STARTS: &[(i32, u8, i64)] = &[
    (2023, 11, 1_698_796_800),
    (2023, 12, 1_701_388_800),
    (2024, 1, 1_704_067_200),
    (2024, 2, 1_706_745_600),
    (2024, 3, 1_709_251_200),
    (2024, 4, 1_711_929_600),
    (2025, 1, 1_735_689_600),
    (2025, 2, 1_738_368_000),
    (2025, 3, 1_740_787_200),
    (2026, 1, 1_767_225_600),
    (2026, 2, 1_769_904_000),
    (2026, 4, 1_775_001_600),
    (2026, 7, 1_782_864_000),
    (2026, 10, 1_790_812_800),
    (2027, 1, 1_798_761_600),
    (2000, 3, 951_868_800),
    (1900, 3, -2_203_891_200),
    (2100, 3, 4_107_542_400),
    (1970, 1, 0),
    (1969, 12, -2_678_400),
    (1969, 8, -13_219_200),
    (1969, 1, -31_536_000),
    (1968, 1, -63_158_400),
    (1900, 1, -2_208_988_800),
    (1, 1, -62_135_596_800),
    (9999, 12, 253_399_622_400),
];

#[test]
fn month_starts_match_python_datetime() {
    for &(y, m, t) in MONTH_STARTS {
        let e = ep(&format!("{y:04}-{m:02}"));
        assert_eq!(e.start_unix(), t, "{e}");
        // N = 1: the epoch is the calendar month; its first second is in it, the one
        // before is in the previous month.
        assert_eq!(Epoch::containing(t, n(1)), e, "{e} first second");
        assert_ne!(Epoch::containing(t - 1, n(1)), e, "{e} last second before");
        assert_eq!(
            Epoch::containing(t - 1, n(1)).next(n(1)),
            e,
            "{e} previous.next"
        );
    }
}

#[test]
fn every_month_start_1601_to_2400_matches_python_checksum() {
    // Python: sum and index-weighted sum (mod 2^61 - 1) of the starts of all 9600 months
    // 1601-01 .. 2400-12 (covers 1700/1800/1900/2100/2200/2300 = not leap, 2000/2400 = leap).
    const COUNT: usize = 9600;
    const SUM: i128 = 9_378_230_976_000;
    const WEIGHTED: i128 = 238_896_481_743_072_000;
    let modulus: i128 = (1 << 61) - 1;
    let mut e = ep("1601-01");
    let (mut count, mut sum, mut weighted) = (0usize, 0i128, 0i128);
    while e < ep("2401-01") {
        let t = i128::from(e.start_unix());
        sum += t;
        weighted = (weighted + count as i128 * t).rem_euclid(modulus);
        // Round trips through `containing` at both edges of the month.
        assert_eq!(Epoch::containing(e.start_unix(), n(1)), e);
        let next = e.next(n(1));
        assert_eq!(Epoch::containing(next.start_unix() - 1, n(1)), e);
        let days = (next.start_unix() - e.start_unix()) / 86_400;
        assert!((28..=31).contains(&days), "{e}: {days} days");
        count += 1;
        e = next;
    }
    assert_eq!((count, sum, weighted), (COUNT, SUM, WEIGHTED));
}

#[test]
fn epoch_boundaries_last_second_vs_first() {
    // 2026-01-01T00:00:00Z = 1767225600 (Python).
    let t = 1_767_225_600;
    assert_eq!(label(t - 1, 1), "2025-12");
    assert_eq!(label(t, 1), "2026-01");
    assert_eq!(label(t - 1, 12), "2025-01");
    assert_eq!(label(t, 12), "2026-01");
    assert_eq!(label(t - 1, 3), "2025-10");
    assert_eq!(label(t, 3), "2026-01");
    // 2026-04-01 = 1775001600: N = 3 turns over, N = 12 does not.
    assert_eq!(label(1_775_001_600 - 1, 3), "2026-01");
    assert_eq!(label(1_775_001_600, 3), "2026-04");
    assert_eq!(label(1_775_001_600, 12), "2026-01");
}

#[test]
fn leap_years() {
    // 2024 is leap: 2024-02-29T23:59:59Z = 1709251199 is still February.
    assert_eq!(label(1_709_251_199, 1), "2024-02");
    assert_eq!(label(1_709_251_200, 1), "2024-03");
    assert_eq!(
        ep("2024-03").start_unix() - ep("2024-02").start_unix(),
        29 * 86_400
    );
    // 2000 is leap (divisible by 400): 2000-02-29T12:00:00Z = 951825600.
    assert_eq!(label(951_825_600, 1), "2000-02");
    assert_eq!(
        ep("2000-03").start_unix() - ep("2000-02").start_unix(),
        29 * 86_400
    );
    // 1900 and 2100 are not (divisible by 100): Feb 28 23:59:59 is the last February second.
    assert_eq!(label(-2_203_891_201, 1), "1900-02");
    assert_eq!(label(-2_203_891_200, 1), "1900-03");
    assert_eq!(
        ep("1900-03").start_unix() - ep("1900-02").start_unix(),
        28 * 86_400
    );
    assert_eq!(label(4_107_542_399, 1), "2100-02");
    assert_eq!(label(4_107_542_400, 1), "2100-03");
    assert_eq!(
        ep("2100-03").start_unix() - ep("2100-02").start_unix(),
        28 * 86_400
    );
    // 2023 is a common year.
    assert_eq!(
        ep("2023-03").start_unix() - ep("2023-02").start_unix(),
        28 * 86_400
    );
}

fn sequence(start: &str, months: u16, count: usize) -> Vec<String> {
    let mut e = ep(start);
    let mut out = Vec::new();
    for _ in 0..count {
        out.push(e.to_string());
        e = e.next(n(months));
    }
    out
}

#[test]
fn n1_every_month() {
    assert_eq!(
        sequence("2025-11", 1, 4),
        ["2025-11", "2025-12", "2026-01", "2026-02"]
    );
    assert_eq!(label(1_738_368_000 + 86_400 * 10, 1), "2025-02");
}

#[test]
fn n12_every_january() {
    assert_eq!(
        sequence("2025-01", 12, 3),
        ["2025-01", "2026-01", "2027-01"]
    );
    assert_eq!(label(1_782_864_000, 12), "2026-01"); // 2026-07-01
    assert_eq!(
        Epoch::containing(1_782_864_000, n(12)).start_unix(),
        1_767_225_600
    );
}

#[test]
fn n5_runs_on_across_years() {
    // From Python with the doc-comment rule; not reset at each January.
    let python: &[(&str, i64)] = &[
        ("2023-05", 1_682_899_200),
        ("2023-10", 1_696_118_400),
        ("2024-03", 1_709_251_200),
        ("2024-08", 1_722_470_400),
        ("2025-01", 1_735_689_600),
        ("2025-06", 1_748_736_000),
        ("2025-11", 1_761_955_200),
        ("2026-04", 1_775_001_600),
        ("2026-09", 1_788_220_800),
        ("2027-02", 1_801_440_000),
        ("2027-07", 1_814_400_000),
        ("2027-12", 1_827_619_200),
    ];
    let labels: Vec<&str> = python.iter().map(|p| p.0).collect();
    assert_eq!(sequence("2023-05", 5, python.len()), labels);
    for w in python.windows(2) {
        let (start, t) = w[0];
        let (next, t_next) = w[1];
        assert_eq!(ep(start).start_unix(), t);
        assert_eq!(label(t, 5), start, "first second of {start}");
        assert_eq!(label(t_next - 1, 5), start, "last second of {start}");
        assert_eq!(label(t_next, 5), next);
    }
    // A January that is not a start: 2026-01-01 is inside the epoch that began 2025-11.
    assert_eq!(label(1_767_225_600, 5), "2025-11");
}

#[test]
fn n24_even_years() {
    assert_eq!(
        sequence("1966-01", 24, 5),
        ["1966-01", "1968-01", "1970-01", "1972-01", "1974-01"]
    );
    assert_eq!(label(0, 24), "1970-01");
    assert_eq!(label(-1, 24), "1968-01");
    assert_eq!(label(63_072_000 - 1, 24), "1970-01"); // 1971-12-31T23:59:59
    assert_eq!(label(63_072_000, 24), "1972-01");
    assert_eq!(label(1_767_225_600, 24), "2026-01");
    assert_eq!(label(1_767_225_600 - 1, 24), "2024-01");
}

#[test]
fn negative_unix_times() {
    assert_eq!(label(-1, 1), "1969-12");
    assert_eq!(label(-1, 12), "1969-01");
    assert_eq!(label(-1, 5), "1969-08"); // Python: N = 5 starts in 1969 are 03 and 08
    assert_eq!(label(-13_219_200, 5), "1969-08");
    assert_eq!(label(-13_219_200 - 1, 5), "1969-03");
    assert_eq!(label(-2_678_400, 1), "1969-12");
    assert_eq!(label(-2_678_400 - 1, 1), "1969-11");
    assert_eq!(label(-62_135_596_800, 1), "0001-01");
    assert_eq!(label(-62_135_596_800 - 1, 1), "0000-12");
    assert_eq!(ep("1969-12").start_unix(), -2_678_400);
}

#[test]
fn extreme_times_do_not_panic() {
    for t in [i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1] {
        for m in [1, 5, 12, 24, 120] {
            let e = Epoch::containing(t, n(m));
            let _ = e.start_unix();
            let _ = e.next(n(m));
            let _ = e.to_string();
        }
    }
    assert_eq!(Epoch::covering(i64::MIN, i64::MAX, n(1), 3).len(), 3);
}

#[test]
fn covering_is_inclusive_and_limited() {
    let jan = 1_767_225_600; // 2026-01-01
    let feb = 1_769_904_000; // 2026-02-01
    let labels = |v: Vec<Epoch>| v.iter().map(|e| e.to_string()).collect::<Vec<_>>();
    assert_eq!(
        labels(Epoch::covering(jan, feb, n(1), 10)),
        ["2026-01", "2026-02"]
    );
    assert_eq!(labels(Epoch::covering(jan, feb - 1, n(1), 10)), ["2026-01"]);
    assert_eq!(
        labels(Epoch::covering(jan - 1, jan, n(1), 10)),
        ["2025-12", "2026-01"]
    );
    assert_eq!(labels(Epoch::covering(jan, jan, n(1), 10)), ["2026-01"]);
    assert!(Epoch::covering(feb, jan, n(1), 10).is_empty());
    assert!(Epoch::covering(jan, feb, n(1), 0).is_empty());
    // A century, limited: the oldest `limit` epochs.
    assert_eq!(
        labels(Epoch::covering(jan, 4_107_542_400, n(1), 3)),
        ["2026-01", "2026-02", "2026-03"]
    );
    assert_eq!(
        Epoch::covering(jan, 4_107_542_400, n(12), 1000).len(),
        2100 - 2026 + 1
    );
    // N = 5 over 2025: epochs starting 2024-08, 2025-01, 2025-06, 2025-11.
    assert_eq!(
        labels(Epoch::covering(
            1_735_689_600 - 1,
            1_767_225_600 - 1,
            n(5),
            10
        )),
        ["2024-08", "2025-01", "2025-06", "2025-11"]
    );
}

#[test]
fn epoch_and_kid_round_trip() {
    for s in ["2026-01", "0000-01", "1969-12", "9999-12", "2024-02"] {
        assert_eq!(ep(s).to_string(), s);
        assert_eq!(ep(s).label(), s);
    }
    let e = ep("2026-07");
    assert_eq!((e.year(), e.month()), (2026, 7));
    for s in [
        "r1.2026-01",
        "r7.2025-07",
        "r10.1999-12",
        "r999999999.2026-01",
    ] {
        let k: Kid = s.parse().unwrap();
        assert_eq!(k.to_string(), s);
    }
    let k: Kid = "r12.2030-06".parse().unwrap();
    assert_eq!(k, Kid::new(12, ep("2030-06")));
}

#[test]
fn epoch_and_kid_rejections() {
    for s in [
        "r0.2026-01",
        "r01.2026-01",
        "r1.2026-13",
        "r1.26-01",
        "1.2026-01",
        "r1.2026-00",
        "r1.2026-1",
        "r.2026-01",
        "r1",
        "r1.",
        "r1.2026-01 ",
        " r1.2026-01",
        "R1.2026-01",
        "r+1.2026-01",
        "r-1.2026-01",
        "r1.+026-01",
        "r1.2026_01",
        "r1.2026-01.",
        "r1234567890.2026-01",
        "r4294967296.2026-01",
        "r1:2026-01",
        "",
    ] {
        assert!(
            matches!(s.parse::<Kid>(), Err(KeyError::Kid(ref x)) if x == s),
            "{s:?} must be rejected"
        );
    }
    for s in [
        "2026-13",
        "2026-00",
        "26-01",
        "2026-1",
        "2026/01",
        "+2026-01",
        "-001-01",
        "202601",
        "2026-01x",
        "２026-01",
    ] {
        assert!(s.parse::<Epoch>().is_err(), "{s:?} must be rejected");
    }
}

#[test]
fn rotation_months_bounds() {
    assert_eq!(RotationMonths::default().get(), 12);
    assert!(RotationMonths::new(0).is_err());
    assert!(RotationMonths::new(121).is_err());
    assert_eq!(RotationMonths::new(120).unwrap().get(), 120);
    assert_eq!(" 5 ".parse::<RotationMonths>().unwrap().get(), 5);
    assert!("x".parse::<RotationMonths>().is_err());
    assert!("0".parse::<RotationMonths>().is_err());
    assert!("-1".parse::<RotationMonths>().is_err());
}
