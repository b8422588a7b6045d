//! Capacity profiles compiled for the hot path, and an agent's current usage.
//!
//! A profile is a budget of units; each channel the agent handles costs some units, may
//! have a per-channel maximum, and may block other channels while work on it is in hand.
//! `fits` answers "can this agent take one more interaction on channel c now?" in a few
//! comparisons, without allocating.

use crate::model::MAX_CHANNELS;
use serde::{Deserialize, Serialize};

/// Dense channel index (0..MAX_CHANNELS).
pub type ChannelIdx = u8;

/// One channel an agent handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChannelEntry {
    pub channel: ChannelIdx,
    pub units: u16,
    pub max_concurrent: u16,
}

/// A validated capacity profile in index form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CompiledProfile {
    pub total_units: u16,
    pub entries: Vec<ChannelEntry>,
    /// Channels handled, as a bitmask.
    pub handled_mask: u64,
    /// `(channel, mask of channels it blocks)`.
    pub blocks: Vec<(ChannelIdx, u64)>,
}

/// Why an agent cannot take one more interaction on a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum CapacityShortfall {
    /// The agent's profile does not include the channel.
    ChannelNotHandled,
    /// Not enough free units.
    NotEnoughUnits {
        /// Units the channel costs this agent.
        needed: u16,
        /// Units free.
        free: u16,
    },
    /// The per-channel maximum is reached.
    ChannelMaximum {
        /// The maximum.
        max_concurrent: u16,
    },
    /// Work in hand on another channel blocks this one.
    BlockedByChannel {
        /// Index of the blocking channel.
        channel: ChannelIdx,
    },
}

impl CompiledProfile {
    pub fn entry(&self, channel: ChannelIdx) -> Option<&ChannelEntry> {
        if self.handled_mask & (1u64 << channel) == 0 {
            return None;
        }
        self.entries.iter().find(|e| e.channel == channel)
    }
}

/// Units and counts in use. Counts are per channel; `active_mask` has a bit set for each
/// channel with work in hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Usage {
    pub used_units: u16,
    pub counts: [u16; MAX_CHANNELS],
    pub active_mask: u64,
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            used_units: 0,
            counts: [0; MAX_CHANNELS],
            active_mask: 0,
        }
    }
}

impl Usage {
    /// Whether one more interaction on `channel` fits `profile`.
    pub fn fits(
        &self,
        profile: &CompiledProfile,
        channel: ChannelIdx,
    ) -> Result<u16, CapacityShortfall> {
        let entry = profile
            .entry(channel)
            .ok_or(CapacityShortfall::ChannelNotHandled)?;
        let free = profile.total_units.saturating_sub(self.used_units);
        if entry.units > free {
            return Err(CapacityShortfall::NotEnoughUnits {
                needed: entry.units,
                free,
            });
        }
        if self.counts[channel as usize] >= entry.max_concurrent {
            return Err(CapacityShortfall::ChannelMaximum {
                max_concurrent: entry.max_concurrent,
            });
        }
        if self.active_mask != 0 {
            for (blocking, mask) in &profile.blocks {
                if self.active_mask & (1u64 << blocking) != 0 && mask & (1u64 << channel) != 0 {
                    return Err(CapacityShortfall::BlockedByChannel { channel: *blocking });
                }
            }
        }
        Ok(entry.units)
    }

    /// Bitmask of the channels among `candidates` that fit now.
    pub fn fit_mask(&self, profile: &CompiledProfile, candidates: u64) -> u64 {
        let mut mask = 0;
        let mut rest = candidates & profile.handled_mask;
        while rest != 0 {
            let channel = rest.trailing_zeros() as ChannelIdx;
            rest &= rest - 1;
            if self.fits(profile, channel).is_ok() {
                mask |= 1u64 << channel;
            }
        }
        mask
    }

    pub fn reserve(&mut self, channel: ChannelIdx, units: u16) {
        self.used_units += units;
        self.counts[channel as usize] += 1;
        self.active_mask |= 1u64 << channel;
    }

    pub fn release(&mut self, channel: ChannelIdx, units: u16) {
        assert!(
            self.used_units >= units && self.counts[channel as usize] > 0,
            "capacity release without reservation (channel {channel}, units {units})"
        );
        self.used_units -= units;
        self.counts[channel as usize] -= 1;
        if self.counts[channel as usize] == 0 {
            self.active_mask &= !(1u64 << channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> CompiledProfile {
        // total 10: voice (0) costs 10, chat (1) costs 3 max 2, email (2) costs 2;
        // voice blocks chat.
        CompiledProfile {
            total_units: 10,
            entries: vec![
                ChannelEntry {
                    channel: 0,
                    units: 10,
                    max_concurrent: u16::MAX,
                },
                ChannelEntry {
                    channel: 1,
                    units: 3,
                    max_concurrent: 2,
                },
                ChannelEntry {
                    channel: 2,
                    units: 2,
                    max_concurrent: u16::MAX,
                },
            ],
            handled_mask: 0b111,
            blocks: vec![(0, 0b010)],
        }
    }

    #[test]
    fn units_maxima_and_blocking() {
        let p = profile();
        let mut u = Usage::default();
        assert_eq!(u.fits(&p, 1), Ok(3));
        u.reserve(1, 3);
        u.reserve(1, 3);
        assert_eq!(
            u.fits(&p, 1),
            Err(CapacityShortfall::ChannelMaximum { max_concurrent: 2 }),
            "third chat must hit the per-channel maximum"
        );
        assert_eq!(u.fits(&p, 2), Ok(2), "email still fits in 4 free units");
        assert_eq!(
            u.fits(&p, 0),
            Err(CapacityShortfall::NotEnoughUnits {
                needed: 10,
                free: 4
            })
        );
        assert_eq!(u.fits(&p, 5), Err(CapacityShortfall::ChannelNotHandled));
        u.release(1, 3);
        u.release(1, 3);
        assert_eq!(u, Usage::default());
        u.reserve(0, 10);
        u.release(0, 10);
        // A voice call in hand blocks chat even with units to spare under a bigger budget.
        let mut big = p.clone();
        big.total_units = 100;
        u.reserve(0, 10);
        assert_eq!(
            u.fits(&big, 1),
            Err(CapacityShortfall::BlockedByChannel { channel: 0 })
        );
        assert_eq!(u.fit_mask(&big, 0b111), 0b101);
    }
}
