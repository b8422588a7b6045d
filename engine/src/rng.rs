//! A small seeded random source (xorshift64*) for drivers of the engine: the demo, the
//! simulator, tests and benches. The engine's own decisions use no randomness; whatever
//! drives it on virtual time uses this, so a seed replays a run exactly.

/// xorshift64*: fast, deterministic, good enough for traffic generation (not for
/// anything secret).
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator for `seed` (0 is mapped to 1: xorshift cannot leave zero).
    pub fn new(seed: u64) -> Self {
        SeededRng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponentially distributed with this mean (e.g. inter-arrival or handle times).
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.next_f64()).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::SeededRng;

    #[test]
    fn same_seed_same_sequence_and_sane_ranges() {
        let (mut a, mut b) = (SeededRng::new(42), SeededRng::new(42));
        for _ in 0..1_000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = SeededRng::new(0);
        let mean = (0..20_000).map(|_| r.exponential(10.0)).sum::<f64>() / 20_000.0;
        assert!((9.0..11.0).contains(&mean), "exponential mean {mean}");
        assert!((0..1_000).all(|_| r.below(7) < 7));
    }
}
