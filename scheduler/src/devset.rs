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
        self.iter().next()
    }

    /// Lowest member that is also in `other`.
    #[inline]
    pub fn first_common(&self, other: &DeviceSet) -> Option<DeviceId> {
        self.iter_common(other).next()
    }

    /// Lowest member of `self ∩ a ∩ b`.
    #[inline]
    pub fn first_common3(&self, a: &DeviceSet, b: &DeviceSet) -> Option<DeviceId> {
        self.iter_common3(a, b).next()
    }

    /// Whether the two sets share a member.
    #[inline]
    pub fn intersects(&self, other: &DeviceSet) -> bool {
        let (a, b) = (self.words(), other.words());
        (0..a.len().min(b.len())).any(|i| a[i] & b[i] != 0)
    }

    /// Members in increasing order.
    #[inline]
    pub fn iter(&self) -> Members<'_> {
        let w = self.words();
        Members::new(w, w, w)
    }

    /// Members of `self ∩ other` in increasing order.
    #[inline]
    pub fn iter_common<'a>(&'a self, other: &'a DeviceSet) -> Members<'a> {
        let (a, b) = (self.words(), other.words());
        Members::new(a, b, b)
    }

    /// Members of `self ∩ a ∩ b` in increasing order.
    #[inline]
    pub fn iter_common3<'a>(&'a self, a: &'a DeviceSet, b: &'a DeviceSet) -> Members<'a> {
        Members::new(self.words(), a.words(), b.words())
    }
}

/// Members of the intersection of up to three sets' words, in increasing order: a plain
/// loop over words (an iterator-adapter chain here cost a hundred instructions per
/// decision in the simulator).
pub struct Members<'a> {
    a: &'a [u64],
    b: &'a [u64],
    c: &'a [u64],
    /// Next word to load.
    next: usize,
    /// Bits of the current word (word `next - 1`) not yet returned.
    word: u64,
}

impl<'a> Members<'a> {
    #[inline]
    fn new(a: &'a [u64], b: &'a [u64], c: &'a [u64]) -> Self {
        let n = a.len().min(b.len()).min(c.len());
        Members { a: &a[..n], b: &b[..n], c: &c[..n], next: 0, word: 0 }
    }
}

impl Iterator for Members<'_> {
    type Item = DeviceId;

    #[inline]
    fn next(&mut self) -> Option<DeviceId> {
        while self.word == 0 {
            let i = self.next;
            if i >= self.a.len() {
                return None;
            }
            self.word = self.a[i] & self.b[i] & self.c[i];
            self.next = i + 1;
        }
        let bit = self.word.trailing_zeros();
        self.word &= self.word - 1;
        Some(DeviceId((self.next as u32 - 1) * 64 + bit))
    }
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
