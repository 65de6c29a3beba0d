//! A small xorshift generator: enough to scatter wake-up times.

use std::time::{SystemTime, UNIX_EPOCH};

/// xorshift64* (Vigna). Not for anything but test timing.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator seeded with `seed` (0 is replaced, xorshift needs a
    /// non-zero state).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// A seed taken from the clock, different on every run.
    pub fn clock_seed() -> u64 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ u64::from(std::process::id()) << 32
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[cfg(test)]
mod tests {
    use super::XorShift;

    #[test]
    fn below_stays_in_range_and_varies() {
        let mut rng = XorShift::new(1);
        let draws: Vec<u64> = (0..1000).map(|_| rng.below(10)).collect();
        assert!(draws.iter().all(|&d| d < 10));
        assert!((0..10).all(|v| draws.contains(&v)));
    }
}
