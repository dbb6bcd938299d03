//! The event queue: a 4-ary min-heap of `u128` keys. Half as deep as a binary heap, and a
//! node's four children share a cache line; the simulator pops and pushes one event per
//! simulated request, and a binary heap's sift was a tenth of its time.

/// A min-heap of `u128` keys with four children per node.
#[derive(Clone, Debug, Default)]
pub struct EventHeap {
    keys: Vec<u128>,
}

impl EventHeap {
    /// The smallest key.
    #[inline]
    pub fn peek(&self) -> Option<u128> {
        self.keys.first().copied()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds a key.
    #[inline]
    pub fn push(&mut self, key: u128) {
        let i = self.keys.len();
        self.keys.push(key);
        self.sift_up(i, key);
    }

    /// Puts `key` in the hole at `i` or above it, moving larger parents down.
    #[inline]
    fn sift_up(&mut self, mut i: usize, key: u128) {
        while i > 0 {
            let parent = (i - 1) / 4;
            if self.keys[parent] <= key {
                break;
            }
            self.keys[i] = self.keys[parent];
            i = parent;
        }
        self.keys[i] = key;
    }

    /// Removes and returns the smallest key.
    #[inline]
    pub fn pop(&mut self) -> Option<u128> {
        let last = self.keys.pop()?;
        let Some(&top) = self.keys.first() else { return Some(last) };
        let n = self.keys.len();
        // Down to a leaf along the smallest children, then back up to where `last` goes:
        // the moved-up last key belongs near the bottom, and the descent needs no
        // comparison with it. Children are chosen without branches (`select`).
        let mut i = 0;
        loop {
            let first = 4 * i + 1;
            if first + 3 < n {
                let k = &self.keys[first..first + 4];
                let a = first + (k[1] < k[0]) as usize;
                let b = first + 2 + (k[3] < k[2]) as usize;
                let c = if self.keys[b] < self.keys[a] { b } else { a };
                self.keys[i] = self.keys[c];
                i = c;
            } else {
                if first < n {
                    let mut c = first;
                    for k in first + 1..n {
                        c = if self.keys[k] < self.keys[c] { k } else { c };
                    }
                    self.keys[i] = self.keys[c];
                    i = c;
                }
                break;
            }
        }
        self.sift_up(i, last);
        Some(top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn pops_in_order_like_a_binary_heap() {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut rng = Rng::seed_from_u64(3);
        let (mut ours, mut std_heap) = (EventHeap::default(), BinaryHeap::new());
        for round in 0..20_000u64 {
            // Mostly pushes early, mostly pops late, with repeated keys.
            let push = (rng.next_u64() % 100) < if round < 10_000 { 70 } else { 30 };
            if push {
                let k = (rng.next_u64() % 500) as u128 * (1 << 64) + (rng.next_u64() % 3) as u128;
                ours.push(k);
                std_heap.push(Reverse(k));
            } else {
                assert_eq!(ours.pop(), std_heap.pop().map(|r| r.0));
            }
            assert_eq!(ours.peek(), std_heap.peek().map(|r| r.0));
            assert_eq!(ours.len(), std_heap.len());
        }
        while let Some(k) = std_heap.pop() {
            assert_eq!(ours.pop(), Some(k.0));
        }
        assert!(ours.is_empty() && ours.pop().is_none());
    }
}
