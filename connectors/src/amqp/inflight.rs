//! Deliveries received and not yet acknowledged: position → (channel generation, tag).
//!
//! AMQP delivery tags restart at 1 on every channel, so they cannot be positions (the
//! platform refuses positions that go backwards within a split). The source numbers its
//! deliveries itself (`seq`, from 1, growing across reconnections) and keeps, per `seq`,
//! the generation of the channel the delivery came on and its tag there. Each new
//! channel gets a new generation.
//!
//! Invariants:
//! - a delivery is acknowledged at most once: it leaves the map before its ack is sent;
//! - only deliveries of the live channel are ever acknowledged; when a channel is lost
//!   its deliveries leave the map unacknowledged (the broker requeues and redelivers
//!   them, under new positions);
//! - within a generation, `seq` and tag grow together, so the live generation's entries
//!   in `seq` order are also in tag order. An ack of the map's oldest live entries up to
//!   tag `t` can therefore use `multiple`: no other unacknowledged tag below `t` exists
//!   on the channel.

use std::collections::VecDeque;

/// One delivery on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Delivered {
    generation: u64,
    tag: u64,
}

/// What to send to acknowledge a range of positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AckPlan {
    /// Nothing of the live channel is covered.
    Nothing,
    /// `basic.ack(tag, multiple = true)`: covers every unacknowledged tag up to `tag`.
    Multiple { tag: u64, count: usize },
    /// One `basic.ack(tag, multiple = false)` per tag, ascending: used when an earlier
    /// delivery of the channel is not covered and must stay unacknowledged.
    Each(Vec<u64>),
}

/// The outcome of [`Inflight::plan_ack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Planned {
    pub(super) plan: AckPlan,
    /// The generation the plan's tags belong to.
    pub(super) generation: u64,
    /// Positions in the range that were not acknowledged because they were no longer held
    /// (their channel was lost, or they were already acknowledged).
    pub(super) skipped: usize,
}

/// The map, as one slot per position from `first_seq` to `next_seq - 1`: positions are
/// numbered consecutively and acknowledged mostly from the oldest, so a queue of slots
/// (emptied ones trimmed from the front) costs no allocation or search per delivery.
#[derive(Debug)]
pub(super) struct Inflight {
    next_seq: i64,
    /// The position of `slots[0]`.
    first_seq: i64,
    /// The generation deliveries may be acknowledged on; `None` while disconnected.
    live: Option<u64>,
    /// `None` once acknowledged or lost; the front slot is always held (or none is).
    slots: VecDeque<Option<Delivered>>,
    /// Slots holding a delivery.
    held: usize,
}

impl Default for Inflight {
    fn default() -> Self {
        Self {
            next_seq: 1,
            first_seq: 1,
            live: None,
            slots: VecDeque::new(),
            held: 0,
        }
    }
}

impl Inflight {
    /// A channel of `generation` is consuming: its deliveries can be acknowledged.
    pub(super) fn channel_opened(&mut self, generation: u64) {
        self.live = Some(generation);
    }

    /// The channel of `generation` is gone: forgets its deliveries (never to be
    /// acknowledged) and returns how many there were.
    pub(super) fn channel_lost(&mut self, generation: u64) -> usize {
        if self.live == Some(generation) {
            self.live = None;
        }
        let mut lost = 0;
        for slot in &mut self.slots {
            if slot.is_some_and(|delivered| delivered.generation == generation) {
                *slot = None;
                lost += 1;
            }
        }
        self.held -= lost;
        self.trim();
        lost
    }

    /// Records a delivery of `generation` and returns its position.
    pub(super) fn record(&mut self, generation: u64, tag: u64) -> i64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.slots.is_empty() {
            self.first_seq = seq;
        }
        self.slots.push_back(Some(Delivered { generation, tag }));
        self.held += 1;
        seq
    }

    /// The generation deliveries are acknowledged on; `None` while disconnected.
    pub(super) fn live_generation(&self) -> Option<u64> {
        self.live
    }

    pub(super) fn is_live(&self, generation: u64) -> bool {
        self.live == Some(generation)
    }

    /// Deliveries received and not yet acknowledged nor lost.
    pub(super) fn unacked(&self) -> usize {
        self.held
    }

    /// Whether acknowledging `covered` processed positions now keeps a channel with a
    /// prefetch `window` delivering: true once they are half the window (commits of half
    /// a window let the other half arrive meanwhile), or when the window is full and
    /// anything at all can be acknowledged (the broker sends nothing more until then).
    pub(super) fn ack_pressure(&self, window: usize, covered: usize) -> bool {
        covered > 0 && (covered.saturating_mul(2) >= window || self.unacked() >= window)
    }

    /// The slot index of position `seq`, clamped to the slots (`0..=len`).
    fn index(&self, seq: i64) -> usize {
        let offset = seq.saturating_sub(self.first_seq).max(0);
        usize::try_from(offset).map_or(self.slots.len(), |i| i.min(self.slots.len()))
    }

    /// Drops emptied slots from the front.
    fn trim(&mut self) {
        while self.slots.front().is_some_and(Option::is_none) {
            self.slots.pop_front();
            self.first_seq += 1;
        }
    }

    /// Takes positions `first..=last` out of the map and says how to acknowledge those of
    /// the live channel. Entries of other generations are dropped unacknowledged. Entries
    /// before `first` stay (they are not covered).
    pub(super) fn plan_ack(&mut self, first: i64, last: i64) -> Planned {
        let live = self.live;
        let positions = usize::try_from(last.saturating_sub(first).saturating_add(1)).unwrap_or(0);
        let (from, to) = if first > last {
            (0, 0)
        } else {
            (self.index(first), self.index(last.saturating_add(1)))
        };
        let mut tags = Vec::new();
        let mut taken = 0;
        for slot in self.slots.range_mut(from..to) {
            if let Some(delivered) = slot.take() {
                taken += 1;
                if Some(delivered.generation) == live {
                    tags.push(delivered.tag);
                }
            }
        }
        self.held -= taken;
        let skipped = positions.saturating_sub(tags.len());
        let Some(generation) = live else {
            self.trim();
            return Planned {
                plan: AckPlan::Nothing,
                generation: 0,
                skipped,
            };
        };
        let earlier_uncovered = self
            .slots
            .range(..from)
            .flatten()
            .any(|delivered| delivered.generation == generation);
        self.trim();
        let plan = match tags.as_slice() {
            [] => AckPlan::Nothing,
            [.., last_tag] if !earlier_uncovered => AckPlan::Multiple {
                tag: *last_tag,
                count: tags.len(),
            },
            _ => AckPlan::Each(tags),
        };
        Planned {
            plan,
            generation,
            skipped,
        }
    }

    /// Forgets everything (the source is closing; nothing more will be acknowledged).
    pub(super) fn clear(&mut self) {
        self.live = None;
        self.slots.clear();
        self.held = 0;
        self.first_seq = self.next_seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_deliveries(generation: u64, tags: std::ops::RangeInclusive<u64>) -> Inflight {
        let mut inflight = Inflight::default();
        inflight.channel_opened(generation);
        for tag in tags {
            inflight.record(generation, tag);
        }
        inflight
    }

    #[test]
    fn pressure_at_half_the_window_or_a_full_one() {
        let inflight = with_deliveries(1, 1..=60);
        // Nothing processed: nothing to acknowledge, whatever the window.
        assert!(!inflight.ack_pressure(60, 0));
        // Half the window processed.
        assert!(inflight.ack_pressure(100, 50));
        assert!(!inflight.ack_pressure(100, 49));
        // The window is full: any processed position is worth acknowledging.
        assert!(inflight.ack_pressure(60, 1));
        assert!(!inflight.ack_pressure(61, 1));
    }

    #[test]
    fn positions_grow_across_generations() {
        let mut inflight = with_deliveries(1, 1..=3);
        assert_eq!(inflight.channel_lost(1), 3);
        inflight.channel_opened(2);
        // Tags restart at 1 on the new channel; positions do not.
        assert_eq!(inflight.record(2, 1), 4);
        assert_eq!(inflight.record(2, 2), 5);
        assert_eq!(inflight.unacked(), 2);
    }

    #[test]
    fn in_order_acks_use_multiple() {
        let mut inflight = with_deliveries(1, 1..=5);
        let planned = inflight.plan_ack(1, 3);
        assert_eq!(planned.plan, AckPlan::Multiple { tag: 3, count: 3 });
        assert_eq!(planned.generation, 1);
        assert_eq!(planned.skipped, 0);
        assert_eq!(inflight.unacked(), 2);
        assert_eq!(
            inflight.plan_ack(4, 5).plan,
            AckPlan::Multiple { tag: 5, count: 2 }
        );
        assert_eq!(inflight.unacked(), 0);
    }

    #[test]
    fn never_acks_twice() {
        let mut inflight = with_deliveries(1, 1..=3);
        inflight.plan_ack(1, 2);
        let again = inflight.plan_ack(1, 3);
        assert_eq!(again.plan, AckPlan::Multiple { tag: 3, count: 1 });
        assert_eq!(again.skipped, 2);
        let third = inflight.plan_ack(1, 3);
        assert_eq!(third.plan, AckPlan::Nothing);
        assert_eq!(third.skipped, 3);
    }

    #[test]
    fn an_uncovered_earlier_delivery_forbids_multiple() {
        let mut inflight = with_deliveries(1, 10..=13);
        let planned = inflight.plan_ack(3, 4);
        assert_eq!(planned.plan, AckPlan::Each(vec![12, 13]));
        // Positions 1 and 2 are still held, and can be acknowledged later.
        assert_eq!(inflight.unacked(), 2);
        assert_eq!(
            inflight.plan_ack(1, 2).plan,
            AckPlan::Multiple { tag: 11, count: 2 }
        );
    }

    #[test]
    fn deliveries_of_a_lost_channel_are_never_acked() {
        let mut inflight = with_deliveries(1, 1..=3);
        assert_eq!(inflight.channel_lost(1), 3);
        inflight.channel_opened(2);
        inflight.record(2, 1);
        inflight.record(2, 2);
        // The platform acknowledges everything it had: the old channel's positions 1..=3
        // are skipped, the new channel's 4..=5 are acknowledged with tags 1..=2.
        let planned = inflight.plan_ack(1, 5);
        assert_eq!(planned.plan, AckPlan::Multiple { tag: 2, count: 2 });
        assert_eq!(planned.generation, 2);
        assert_eq!(planned.skipped, 3);
    }

    #[test]
    fn nothing_is_acked_while_disconnected() {
        let mut inflight = with_deliveries(1, 1..=2);
        inflight.live = None;
        let planned = inflight.plan_ack(1, 2);
        assert_eq!(planned.plan, AckPlan::Nothing);
        assert_eq!(planned.skipped, 2);
        assert_eq!(inflight.unacked(), 0);
    }

    #[test]
    fn out_of_order_acks_and_ranges_beyond_the_deliveries() {
        let mut inflight = with_deliveries(1, 1..=6);
        // The middle first: positions 1 and 2 stay, so no `multiple`.
        assert_eq!(inflight.plan_ack(3, 4).plan, AckPlan::Each(vec![3, 4]));
        // A range reaching before and beyond what is held takes only what is held.
        let planned = inflight.plan_ack(-5, 2);
        assert_eq!(planned.plan, AckPlan::Multiple { tag: 2, count: 2 });
        assert_eq!(planned.skipped, 6);
        let planned = inflight.plan_ack(5, 100);
        assert_eq!(planned.plan, AckPlan::Multiple { tag: 6, count: 2 });
        assert_eq!(planned.skipped, 94);
        assert_eq!(inflight.unacked(), 0);
        assert_eq!(inflight.slots.len(), 0, "acknowledged slots are dropped");
        // Numbering goes on after the map emptied.
        assert_eq!(inflight.record(1, 7), 7);
        assert_eq!(
            inflight.plan_ack(7, 7).plan,
            AckPlan::Multiple { tag: 7, count: 1 }
        );
        // An empty range acknowledges nothing.
        inflight.record(1, 8);
        assert_eq!(inflight.plan_ack(9, 8).plan, AckPlan::Nothing);
        assert_eq!(inflight.unacked(), 1);
    }

    #[test]
    fn a_lost_generation_between_live_ones_is_skipped() {
        let mut inflight = with_deliveries(1, 1..=2);
        inflight.channel_opened(2);
        inflight.record(2, 1);
        inflight.record(2, 2);
        // Generation 1's deliveries are older than generation 2's and still held: losing
        // generation 1 drops them, and generation 2's can then use `multiple`.
        assert_eq!(inflight.channel_lost(1), 2);
        assert_eq!(inflight.unacked(), 2);
        assert_eq!(inflight.slots.len(), 2, "the lost front slots are dropped");
        let planned = inflight.plan_ack(1, 4);
        assert_eq!(planned.plan, AckPlan::Multiple { tag: 2, count: 2 });
        assert_eq!(planned.skipped, 2);
    }

    #[test]
    fn losing_an_old_generation_keeps_the_live_one() {
        let mut inflight = with_deliveries(2, 1..=2);
        assert_eq!(inflight.channel_lost(1), 0);
        assert!(inflight.is_live(2));
        inflight.clear();
        assert!(!inflight.is_live(2));
        assert_eq!(inflight.unacked(), 0);
    }
}
