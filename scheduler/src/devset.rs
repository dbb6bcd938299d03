//! A fixed-size bit set of devices: membership, lowest member, intersection scans.
//! With 1,000 devices a full scan is 16 words, which keeps decisions in nanoseconds.

use crate::model::DeviceId;

/// Sets for clusters up to this many devices keep their words inline (no pointer to
/// chase: the scheduler reads a function's runnable and resident sets on every decision).
const INLINE_WORDS: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Words {
    Inline([u64; INLINE_WORDS]),
    Heap(Vec<u64>),
}

impl Default for Words {
    fn default() -> Self {
        Words::Inline([0; INLINE_WORDS])
    }
}

/// A set of device ids below a fixed capacity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceSet {
    words: Words,
    len: usize,
}

impl DeviceSet {
    /// An empty set for ids below `capacity`.
    pub fn new(capacity: usize) -> Self {
        let n = capacity.div_ceil(64);
        let words =
            if n <= INLINE_WORDS { Words::Inline([0; INLINE_WORDS]) } else { Words::Heap(vec![0; n]) };
        DeviceSet { words, len: 0 }
    }

    #[inline]
    fn words(&self) -> &[u64] {
        match &self.words {
            Words::Inline(w) => w,
            Words::Heap(w) => w,
        }
    }

    #[inline]
    fn words_mut(&mut self) -> &mut [u64] {
        match &mut self.words {
            Words::Inline(w) => w,
            Words::Heap(w) => w,
        }
    }

    /// Adds `d`; returns whether it was absent.
    #[inline]
    pub fn insert(&mut self, d: DeviceId) -> bool {
        let (w, b) = (d.0 as usize / 64, d.0 % 64);
        let words = self.words_mut();
        let fresh = words[w] & (1 << b) == 0;
        words[w] |= 1 << b;
        self.len += fresh as usize;
        fresh
    }

    /// Removes `d`; returns whether it was present.
    #[inline]
    pub fn remove(&mut self, d: DeviceId) -> bool {
        let (w, b) = (d.0 as usize / 64, d.0 % 64);
        let words = self.words_mut();
        let present = words[w] & (1 << b) != 0;
        words[w] &= !(1 << b);
        self.len -= present as usize;
        present
    }

    /// Whether `d` is in the set.
    #[inline]
    pub fn contains(&self, d: DeviceId) -> bool {
        self.words().get(d.0 as usize / 64).is_some_and(|w| w & (1 << (d.0 % 64)) != 0)
    }

    /// Number of members.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lowest member.
    #[inline]
    pub fn first(&self) -> Option<DeviceId> {
        first_in(self.words().iter().copied())
    }

    /// Lowest member that is also in `other`.
    #[inline]
    pub fn first_common(&self, other: &DeviceSet) -> Option<DeviceId> {
        first_in(self.words().iter().zip(other.words()).map(|(a, b)| a & b))
    }

    /// Lowest member of `self ∩ a ∩ b`.
    #[inline]
    pub fn first_common3(&self, a: &DeviceSet, b: &DeviceSet) -> Option<DeviceId> {
        first_in(self.words().iter().zip(a.words()).zip(b.words()).map(|((x, y), z)| x & y & z))
    }

    /// Whether the two sets share a member.
    #[inline]
    pub fn intersects(&self, other: &DeviceSet) -> bool {
        self.words().iter().zip(other.words()).any(|(a, b)| a & b != 0)
    }

    /// Members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = DeviceId> + '_ {
        bits(self.words().iter().copied())
    }

    /// Members of `self ∩ other` in increasing order.
    pub fn iter_common<'a>(&'a self, other: &'a DeviceSet) -> impl Iterator<Item = DeviceId> + 'a {
        bits(self.words().iter().zip(other.words()).map(|(a, b)| a & b))
    }

    /// Members of `self ∩ a ∩ b` in increasing order.
    pub fn iter_common3<'a>(
        &'a self,
        a: &'a DeviceSet,
        b: &'a DeviceSet,
    ) -> impl Iterator<Item = DeviceId> + 'a {
        bits(self.words().iter().zip(a.words()).zip(b.words()).map(|((x, y), z)| x & y & z))
    }
}

/// The set bits of a word sequence, as device ids: a plain loop over words (an adapter
/// chain here cost a hundred instructions per decision in the simulator).
fn bits(words: impl Iterator<Item = u64>) -> impl Iterator<Item = DeviceId> {
    Bits { words, base: 0, word: 0 }
}

struct Bits<I> {
    words: I,
    /// Device id of bit 0 of the word after `word`.
    base: u32,
    /// Bits of the current word not yet returned.
    word: u64,
}

impl<I: Iterator<Item = u64>> Iterator for Bits<I> {
    type Item = DeviceId;

    #[inline]
    fn next(&mut self) -> Option<DeviceId> {
        while self.word == 0 {
            self.word = self.words.next()?;
            self.base += 64;
        }
        let bit = self.word.trailing_zeros();
        self.word &= self.word - 1;
        Some(DeviceId(self.base - 64 + bit))
    }
}

#[inline]
fn first_in(words: impl Iterator<Item = u64>) -> Option<DeviceId> {
    for (i, w) in words.enumerate() {
        if w != 0 {
            return Some(DeviceId(i as u32 * 64 + w.trailing_zeros()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_first_and_iterate() {
        let mut s = DeviceSet::new(200);
        assert_eq!(s.first(), None);
        for d in [130, 5, 64, 199] {
            assert!(s.insert(DeviceId(d)));
        }
        assert!(!s.insert(DeviceId(5)));
        assert_eq!(s.len(), 4);
        assert_eq!(s.first(), Some(DeviceId(5)));
        assert_eq!(s.iter().map(|d| d.0).collect::<Vec<_>>(), vec![5, 64, 130, 199]);
        assert!(s.remove(DeviceId(5)));
        assert!(!s.remove(DeviceId(5)));
        assert_eq!(s.first(), Some(DeviceId(64)));
        let mut t = DeviceSet::new(200);
        t.insert(DeviceId(130));
        t.insert(DeviceId(7));
        assert_eq!(s.first_common(&t), Some(DeviceId(130)));
        assert_eq!(s.iter_common(&t).collect::<Vec<_>>(), vec![DeviceId(130)]);
        assert!(s.intersects(&t));
        assert!(!s.contains(DeviceId(7)) && s.contains(DeviceId(199)));
    }
}
