//! YCSB's request distribution: the zipfian generator of Gray et al. ("Quickly Generating
//! Billion-Record Synthetic Databases", SIGMOD 1994), as YCSB's `ZipfianGenerator` implements it,
//! with YCSB's constant 0.99, and a fixed permutation that scatters the popular items over the
//! items (YCSB's `ScrambledZipfianGenerator` scatters them with a hash).
//!
//! Written here rather than taken from a crate: the crates on the registry (`zipf`,
//! `rand_distr::Zipf`) draw from the exact Zipf law by rejection sampling, a different
//! generator from YCSB's (whose ranks above 1 follow Gray's closed-form approximation), and
//! they bring a `rand` version of their own. This one is YCSB's arithmetic, a few lines, with
//! its own tests.

/// YCSB's zipfian constant.
pub const YCSB_THETA: f64 = 0.99;

/// Ranks `0..n` drawn with probability about `1 / (rank + 1)^theta / zeta(n, theta)`: rank 0
/// the most popular.
#[derive(Debug, Clone, Copy)]
pub struct Zipfian {
    n: u64,
    alpha: f64,
    zetan: f64,
    eta: f64,
    /// `1 + 0.5^theta`: below it (times `zetan`), rank 1.
    rank1_bound: f64,
}

/// `sum_{i=1..=n} 1 / i^theta`.
pub fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| (i as f64).powf(-theta)).sum()
}

impl Zipfian {
    /// Over `n` items (at least 1); `theta` in (0, 1). Computing `zeta(n)` takes O(n): about
    /// 0.2 s for 10 million items.
    pub fn new(n: u64, theta: f64) -> Self {
        assert!(n >= 1, "a zipfian over no items");
        assert!(theta > 0.0 && theta < 1.0, "theta must be in (0, 1)");
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2, theta);
        Zipfian {
            n,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan),
            rank1_bound: 1.0 + 0.5f64.powf(theta),
        }
    }

    /// The rank for `u` uniform in [0, 1).
    pub fn rank(&self, u: f64) -> u64 {
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < self.rank1_bound {
            return 1;
        }
        let r = self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha);
        (r as u64).min(self.n - 1)
    }

    pub fn next(&self, rng: &mut fastrand::Rng) -> u64 {
        self.rank(rng.f64())
    }
}

/// A fixed permutation of `0..n` (multiplication by a number prime to `n`, modulo `n`): rank →
/// item, so that consecutive ranks land far apart.
#[derive(Debug, Clone, Copy)]
pub struct Scatter {
    n: u64,
    mul: u64,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Scatter {
    pub fn new(n: u64) -> Self {
        assert!(n >= 1, "a permutation of no items");
        let mut mul = 0x9E37_79B9_7F4A_7C15 % n;
        while gcd(mul, n) != 1 {
            mul += 1;
        }
        Scatter { n, mul }
    }

    pub fn item(&self, rank: u64) -> u64 {
        ((rank as u128 * self.mul as u128) % self.n as u128) as u64
    }
}

/// Items `0..n` drawn zipfian (YCSB's constant), the popular ones scattered.
#[derive(Debug, Clone, Copy)]
pub struct ScatteredZipfian {
    zipf: Zipfian,
    scatter: Scatter,
}

impl ScatteredZipfian {
    pub fn new(n: u64) -> Self {
        ScatteredZipfian {
            zipf: Zipfian::new(n, YCSB_THETA),
            scatter: Scatter::new(n),
        }
    }

    pub fn next(&self, rng: &mut fastrand::Rng) -> u64 {
        self.scatter.item(self.zipf.next(rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeta_sums_the_powers() {
        assert_eq!(zeta(1, 0.99), 1.0);
        assert!((zeta(2, 0.99) - (1.0 + 2f64.powf(-0.99))).abs() < 1e-12);
        // Integral bounds: the sum lies between the integrals from 1 to n + 1 and from 1 to n,
        // plus 1.
        let (n, t) = (100_000u64, 0.99);
        let integral = |x: f64| (x.powf(1.0 - t) - 1.0) / (1.0 - t);
        let z = zeta(n, t);
        assert!(z > integral(n as f64 + 1.0) && z < 1.0 + integral(n as f64));
    }

    #[test]
    fn ranks_stay_in_range() {
        let mut rng = fastrand::Rng::with_seed(1);
        for n in [1, 2, 3, 10, 1000] {
            let z = Zipfian::new(n, YCSB_THETA);
            assert!((0..20_000).all(|_| z.next(&mut rng) < n), "n = {n}");
            assert_eq!(z.rank(0.0), 0);
            assert!(z.rank(1.0 - f64::EPSILON) < n);
        }
    }

    #[test]
    fn frequencies_follow_the_law() {
        let (n, draws) = (10_000u64, 2_000_000usize);
        let z = Zipfian::new(n, YCSB_THETA);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = vec![0u64; n as usize];
        for _ in 0..draws {
            counts[z.next(&mut rng) as usize] += 1;
        }
        let zn = zeta(n, YCSB_THETA);
        // Ranks 0 and 1 are exact in Gray's method: within 4 standard deviations.
        for (rank, p) in [(0usize, 1.0 / zn), (1, 2f64.powf(-YCSB_THETA) / zn)] {
            let expected = p * draws as f64;
            let sd = (expected * (1.0 - p)).sqrt();
            let got = counts[rank] as f64;
            assert!(
                (got - expected).abs() < 4.0 * sd,
                "rank {rank}: {got} vs {expected}"
            );
        }
        // Above rank 1, Gray's closed form: P(rank < k) = 1 - (1 - (k/n)^(1-theta)) / eta, within
        // 1% of it; and that form is within 6% of the exact law (it gives the head a little
        // more: YCSB's generator as it is).
        let eta =
            (1.0 - (2.0 / n as f64).powf(1.0 - YCSB_THETA)) / (1.0 - zeta(2, YCSB_THETA) / zn);
        for k in [10u64, 100, 1000, 5000] {
            let got = counts[..k as usize].iter().sum::<u64>() as f64 / draws as f64;
            let gray = 1.0 - (1.0 - (k as f64 / n as f64).powf(1.0 - YCSB_THETA)) / eta;
            let law = zeta(k, YCSB_THETA) / zn;
            assert!(
                (got - gray).abs() / gray < 0.01,
                "first {k}: {got} vs {gray}"
            );
            assert!(
                (got - law).abs() / law < 0.06,
                "first {k}: {got} vs the law's {law}"
            );
        }
        // And the law is decreasing: each decade of ranks is drawn less than the one before,
        // per rank.
        let per_rank = |r: std::ops::Range<usize>| {
            counts[r.clone()].iter().sum::<u64>() as f64 / r.len() as f64
        };
        assert!(per_rank(0..10) > per_rank(10..100));
        assert!(per_rank(10..100) > per_rank(100..1000));
        assert!(per_rank(100..1000) > per_rank(1000..10_000));
    }

    #[test]
    fn scatter_is_a_permutation() {
        for n in [1u64, 2, 3, 4, 97, 1000, 4096, 200_000] {
            let s = Scatter::new(n);
            let mut seen = vec![false; n as usize];
            for r in 0..n {
                let i = s.item(r) as usize;
                assert!(!seen[i], "n = {n}: item {i} twice");
                seen[i] = true;
            }
        }
        // Popular ranks land far apart.
        let s = Scatter::new(1_000_000);
        assert!(s.item(1).abs_diff(s.item(0)) > 1000);
    }

    #[test]
    fn draws_are_deterministic_per_seed() {
        let z = ScatteredZipfian::new(5000);
        let draw = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..100).map(|_| z.next(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }
}
