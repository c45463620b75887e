//! The objects the bucket source has yet to read: those waiting their turn, and notified
//! objects not found yet that wait to be looked for again (see `notified`), with an index
//! of their identities so a repeated notice is recognised without a scan.
//!
//! Invariants:
//! - `queued` holds exactly the identities ([`Identity`]: key, and etag or `""`) of the
//!   objects in `ready` and `later`, and each identity is there at most once: queueing
//!   an object whose identity is queued already leaves the queue as it was.
//! - `ready` is taken in the order objects were queued. An object put back for `later`
//!   joins the back of `ready` once its time has come; objects that come due together
//!   join in the order of their times, and for the same time in the order they were put
//!   back.
//!
//! Costs, with `n` objects held: queueing (which tells a repeated object apart) and
//! taking are O(1), amortised as for a hash set; putting back and
//! [`ObjectQueue::next_due`] are O(log n), and [`ObjectQueue::release_due`] O(log n) per
//! object released. The source checks every notice against what it holds, so a scan
//! here would make a burst of `n` notices cost O(n²) (`bench/notice_burst.rs`).

use std::collections::{BTreeMap, HashSet, VecDeque};

use tokio::time::Instant;

use super::Pending;

/// What tells two versions of objects apart: the key, and the etag (`""` when the store
/// or the notice gives none), as the cursor records them.
pub(super) type Identity = (String, String);

/// See the module docs.
#[derive(Default)]
pub(super) struct ObjectQueue {
    ready: VecDeque<Pending>,
    /// By when to look again, and the order they were put back in (unique).
    later: BTreeMap<(Instant, u64), Pending>,
    put_back: u64,
    queued: HashSet<Identity>,
}

impl Pending {
    pub(super) fn identity(&self) -> Identity {
        (self.key.clone(), self.etag.clone().unwrap_or_default())
    }
}

impl ObjectQueue {
    /// Queues `object` at the back, unless an object with its identity is queued
    /// already (ready or for later); returns whether it was queued.
    pub(super) fn push(&mut self, object: Pending) -> bool {
        if !self.queued.insert(object.identity()) {
            return false;
        }
        self.ready.push_back(object);
        true
    }

    /// Takes the object queued first.
    pub(super) fn pop(&mut self) -> Option<Pending> {
        let object = self.ready.pop_front()?;
        self.queued.remove(&object.identity());
        Some(object)
    }

    /// Keeps `object` until `at`, then [`Self::release_due`] queues it again; does
    /// nothing when an object with its identity is queued already.
    pub(super) fn put_back(&mut self, at: Instant, object: Pending) {
        if !self.queued.insert(object.identity()) {
            return;
        }
        self.put_back += 1;
        self.later.insert((at, self.put_back), object);
    }

    /// When the first object put back is due, if any is.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.later.keys().next().map(|(at, _)| *at)
    }

    /// Moves every object put back whose time is `now` or earlier to the back of the
    /// ready ones (see the module docs for their order).
    pub(super) fn release_due(&mut self, now: Instant) {
        while let Some(entry) = self.later.first_entry() {
            if entry.key().0 > now {
                break;
            }
            self.ready.push_back(entry.remove());
        }
    }

    /// Objects ready to be read (those put back for later are not counted).
    pub(super) fn len(&self) -> usize {
        self.ready.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::notified::object_location;
    use super::*;

    fn object(key: &str, etag: Option<&str>) -> Pending {
        Pending {
            location: object_location(key),
            key: key.to_owned(),
            etag: etag.map(str::to_owned),
            notice: None,
        }
    }

    fn holds(queue: &ObjectQueue, key: &str, etag: &str) -> bool {
        queue.queued.contains(&(key.to_owned(), etag.to_owned()))
    }

    fn keys(queue: &mut ObjectQueue) -> Vec<String> {
        std::iter::from_fn(|| queue.pop()).map(|o| o.key).collect()
    }

    #[test]
    fn objects_are_taken_in_the_order_they_were_queued() {
        let mut queue = ObjectQueue::default();
        for key in ["c", "a", "b"] {
            assert!(queue.push(object(key, Some("e"))));
        }
        assert_eq!(queue.len(), 3);
        assert_eq!(keys(&mut queue), ["c", "a", "b"]);
        assert!(queue.is_empty());
    }

    #[test]
    fn an_object_is_queued_once_per_version() {
        let mut queue = ObjectQueue::default();
        assert!(queue.push(object("a", Some("1"))));
        assert!(
            !queue.push(object("a", Some("1"))),
            "the same version again"
        );
        assert!(
            queue.push(object("a", Some("2"))),
            "another version is another object"
        );
        assert!(queue.push(object("b", None)));
        assert!(
            !queue.push(object("b", Some(""))),
            "no etag is the empty etag"
        );
        assert!(holds(&queue, "a", "1") && holds(&queue, "a", "2") && holds(&queue, "b", ""));
        assert!(!holds(&queue, "a", "3"));
        assert_eq!(queue.len(), 3);
    }

    #[test]
    fn a_taken_object_can_be_queued_again() {
        let mut queue = ObjectQueue::default();
        queue.push(object("a", Some("1")));
        assert_eq!(queue.pop().unwrap().key, "a");
        assert!(!holds(&queue, "a", "1"));
        assert!(queue.push(object("a", Some("1"))));
    }

    #[test]
    fn objects_put_back_are_held_until_due_then_queued_behind_the_ready_ones() {
        let start = Instant::now();
        let mut queue = ObjectQueue::default();
        queue.put_back(start + Duration::from_secs(3), object("late", Some("e")));
        queue.put_back(start + Duration::from_secs(1), object("first", Some("e")));
        queue.put_back(start + Duration::from_secs(1), object("second", Some("e")));
        queue.push(object("ready", Some("e")));
        assert_eq!(queue.next_due(), Some(start + Duration::from_secs(1)));
        assert!(holds(&queue, "late", "e"), "held while it waits");
        assert!(
            !queue.push(object("first", Some("e"))),
            "a repeated notice of one that waits is not queued"
        );
        assert_eq!(queue.len(), 1, "those put back are not ready");

        queue.release_due(start + Duration::from_secs(2));
        assert_eq!(queue.next_due(), Some(start + Duration::from_secs(3)));
        assert_eq!(keys(&mut queue), ["ready", "first", "second"]);
        assert!(holds(&queue, "late", "e"));

        queue.release_due(start + Duration::from_secs(3));
        assert_eq!(queue.next_due(), None);
        assert_eq!(keys(&mut queue), ["late"]);
        assert!(!holds(&queue, "late", "e"));
    }

    #[test]
    fn an_object_waiting_is_not_put_back_twice() {
        let start = Instant::now();
        let mut queue = ObjectQueue::default();
        queue.push(object("a", Some("e")));
        queue.put_back(start, object("a", Some("e")));
        queue.put_back(start, object("b", Some("e")));
        queue.put_back(start, object("b", Some("e")));
        queue.release_due(start);
        assert_eq!(keys(&mut queue), ["a", "b"]);
    }
}
