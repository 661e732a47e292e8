//! Mailpit's chaos triggers: errors the SMTP server answers on purpose, at random, so that
//! a sender's retry logic can be tested. Three triggers: `sender` (at MAIL FROM),
//! `recipient` (at each RCPT TO) and `authentication` (at AUTH), each an SMTP error code
//! (400-599) and a probability (0-100 %). [`Chaos`] is one live object per process: the
//! Mailpit API sets the triggers, the SMTP checks and the authenticator roll them. It is
//! off unless the settings enable it (`mailpit.chaos`); off, no trigger fires and the API
//! refuses to read or set them.

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// One trigger: answer `code` with a chance of `probability` percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    /// The SMTP reply code (400-599).
    pub code: u16,
    /// The chance of answering it, 0 (never) to 100 (always).
    pub probability: u8,
}

/// The three triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Triggers {
    /// At MAIL FROM.
    pub sender: Trigger,
    /// At each RCPT TO.
    pub recipient: Trigger,
    /// At AUTH.
    pub authentication: Trigger,
}

impl Triggers {
    /// The default code of each trigger (as Mailpit's): 451, 451 and 535.
    pub const DEFAULT_CODES: [u16; 3] = [451, 451, 535];
}

impl Default for Triggers {
    /// Every trigger at its default code and 0 %: nothing fires.
    fn default() -> Self {
        let [s, r, a] = Triggers::DEFAULT_CODES;
        let off = |code| Trigger {
            code,
            probability: 0,
        };
        Triggers {
            sender: off(s),
            recipient: off(r),
            authentication: off(a),
        }
    }
}

/// Where a trigger fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// MAIL FROM.
    Sender,
    /// RCPT TO.
    Recipient,
    /// AUTH.
    Authentication,
}

impl Hook {
    /// The word in the reply text (`451 Chaos sender error`).
    pub fn word(self) -> &'static str {
        match self {
            Hook::Sender => "sender",
            Hook::Recipient => "recipient",
            Hook::Authentication => "authentication",
        }
    }
}

/// Triggers that cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChaosError {
    /// The settings do not enable chaos.
    #[error("Chaos is not enabled")]
    Disabled,
    /// A code outside 400-599.
    #[error("error code must be between 400 and 599")]
    Code,
    /// A probability over 100.
    #[error("probability must be between 0 and 100")]
    Probability,
}

/// The process's chaos triggers and whether they are enabled.
#[derive(Debug, Default)]
pub struct Chaos {
    enabled: AtomicBool,
    triggers: RwLock<Triggers>,
}

impl Chaos {
    /// Triggers at 0 %, enabled or not.
    pub fn new(enabled: bool) -> Chaos {
        Chaos {
            enabled: AtomicBool::new(enabled),
            triggers: RwLock::new(Triggers::default()),
        }
    }

    /// Enables or disables chaos (at start and on a reload); the triggers are kept.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Whether the settings enable chaos.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The current triggers (`Disabled` when chaos is off).
    pub fn triggers(&self) -> Result<Triggers, ChaosError> {
        if !self.is_enabled() {
            return Err(ChaosError::Disabled);
        }
        Ok(*self.triggers.read().expect("chaos triggers"))
    }

    /// Replaces every trigger, after checking them all (nothing changes on an error).
    pub fn set(&self, t: Triggers) -> Result<Triggers, ChaosError> {
        if !self.is_enabled() {
            return Err(ChaosError::Disabled);
        }
        for x in [t.sender, t.recipient, t.authentication] {
            if !(400..=599).contains(&x.code) {
                return Err(ChaosError::Code);
            }
            if x.probability > 100 {
                return Err(ChaosError::Probability);
            }
        }
        *self.triggers.write().expect("chaos triggers") = t;
        tracing::info!(?t, "chaos triggers set");
        Ok(t)
    }

    /// Rolls the trigger of `hook`: the code to answer when it fires.
    pub fn fire(&self, hook: Hook) -> Option<u16> {
        // A number in 0..100, uniform enough (122 random bits).
        self.fire_with(hook, (uuid::Uuid::new_v4().as_u128() % 100) as u8)
    }

    /// [`Chaos::fire`] with the roll given (0-99): fires when it is below the probability.
    pub fn fire_with(&self, hook: Hook, roll: u8) -> Option<u16> {
        if !self.is_enabled() {
            return None;
        }
        let t = self.triggers.read().expect("chaos triggers");
        let trigger = match hook {
            Hook::Sender => t.sender,
            Hook::Recipient => t.recipient,
            Hook::Authentication => t.authentication,
        };
        (roll < trigger.probability).then_some(trigger.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(code: u16, probability: u8) -> Trigger {
        Trigger { code, probability }
    }

    #[test]
    fn a_trigger_fires_below_its_probability_and_only_when_enabled() {
        let c = Chaos::new(true);
        let t = Triggers {
            sender: at(450, 100),
            recipient: at(550, 30),
            ..Triggers::default()
        };
        c.set(t).unwrap();
        assert_eq!(c.fire_with(Hook::Sender, 99), Some(450));
        assert_eq!(c.fire(Hook::Sender), Some(450));
        assert_eq!(c.fire_with(Hook::Recipient, 29), Some(550));
        assert_eq!(c.fire_with(Hook::Recipient, 30), None);
        assert_eq!(c.fire_with(Hook::Authentication, 0), None);
        c.set_enabled(false);
        assert_eq!(c.fire_with(Hook::Sender, 0), None);
        assert_eq!(c.triggers(), Err(ChaosError::Disabled));
        c.set_enabled(true);
        assert_eq!(c.triggers(), Ok(t), "a reload keeps the triggers");
    }

    #[test]
    fn bad_triggers_change_nothing() {
        let c = Chaos::new(true);
        let bad_code = Triggers {
            sender: at(250, 10),
            ..Triggers::default()
        };
        assert_eq!(c.set(bad_code), Err(ChaosError::Code));
        let bad_chance = Triggers {
            authentication: at(535, 101),
            ..Triggers::default()
        };
        assert_eq!(c.set(bad_chance), Err(ChaosError::Probability));
        assert_eq!(c.triggers(), Ok(Triggers::default()));
        assert_eq!(
            Chaos::new(false).set(Triggers::default()),
            Err(ChaosError::Disabled)
        );
    }
}
