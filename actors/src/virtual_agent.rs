//! Virtual agents: an automated first stage of a conversation that talks with the
//! customer, collects data (intent, order number, …) and either resolves the
//! conversation or escalates it to a live queue with everything it collected.
//!
//! [`VirtualAgent`] is the plug-in point (an LLM, a dialogue engine, an IVR adapter);
//! [`RuleBasedAgent`] is the built-in one for demos and tests: keyword intents, an order
//! number recognised as a run of digits, a canned answer per intent.

use std::collections::BTreeMap;

/// What a virtual agent knows about the conversation so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BotMemory {
    /// Data collected (`intent`, `order_number`, …): becomes the interaction's
    /// attributes on escalation, so routing rules and the agent see it.
    pub collected: BTreeMap<String, String>,
    /// Customer turns so far.
    pub turns: u32,
}

/// A virtual agent's answer to one customer message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BotTurn {
    /// Say this and wait for the customer.
    Reply(String),
    /// Say this; the conversation is resolved without an agent.
    Resolve(String),
    /// Say this and hand over to a live agent in `queue` (or the routing rules' choice).
    Escalate {
        /// Said to the customer.
        reply: String,
        /// Queue to escalate to.
        queue: Option<String>,
    },
}

/// A pluggable virtual agent. Calls must be quick (they run inside the conversation's
/// actor); anything slow belongs behind a channel.
pub trait VirtualAgent: Send + Sync + 'static {
    /// Its name (shown in transcripts as the writer).
    fn name(&self) -> &str;
    /// The greeting sent when a conversation starts with it (before the first
    /// message is answered), if any.
    fn greeting(&self) -> Option<String> {
        None
    }
    /// Answers one customer message, updating what it collected.
    fn respond(&self, memory: &mut BotMemory, text: &str) -> BotTurn;
}

/// One intent of the rule-based agent.
#[derive(Clone, Debug)]
pub struct IntentRule {
    /// Intent name (stored as `intent`).
    pub intent: String,
    /// Any of these words (lower case) in a message selects it.
    pub keywords: Vec<String>,
    /// Whether it needs an order number before it can go further.
    pub needs_order_number: bool,
    /// Answer that resolves it (`{order_number}` is replaced); `None` escalates it.
    pub resolution: Option<String>,
    /// Queue to escalate to.
    pub queue: Option<String>,
}

/// The built-in rule-based virtual agent (see the module docs).
#[derive(Clone, Debug)]
pub struct RuleBasedAgent {
    name: String,
    intents: Vec<IntentRule>,
    /// Words that always mean "let me talk to a person".
    pub handoff_words: Vec<String>,
    /// Customer turns after which it escalates whatever it has.
    pub max_turns: u32,
    /// Queue for escalations no intent names.
    pub default_queue: Option<String>,
}

impl RuleBasedAgent {
    /// An agent with these intents.
    pub fn new(name: &str, intents: Vec<IntentRule>) -> Self {
        RuleBasedAgent {
            name: name.to_string(),
            intents,
            handoff_words: ["agent", "human", "person", "representative"]
                .map(String::from)
                .to_vec(),
            max_turns: 4,
            default_queue: None,
        }
    }

    /// The demo bot: order status (resolved with the order number), refunds and
    /// complaints (escalated with what it learnt).
    pub fn demo() -> Self {
        let rule = |intent: &str, words: &[&str], needs: bool, res: Option<&str>| IntentRule {
            intent: intent.to_string(),
            keywords: words.iter().map(|w| w.to_string()).collect(),
            needs_order_number: needs,
            resolution: res.map(String::from),
            queue: None,
        };
        RuleBasedAgent::new(
            "order-bot",
            vec![
                rule(
                    "order_status",
                    &["where", "status", "tracking", "delivery", "shipped"],
                    true,
                    Some("Order {order_number} is on its way and arrives in 2 days."),
                ),
                rule("refund", &["refund", "money back", "return"], true, None),
                rule(
                    "complaint",
                    &["complaint", "broken", "damaged", "angry"],
                    false,
                    None,
                ),
            ],
        )
    }

    fn order_number(text: &str) -> Option<String> {
        text.split(|c: char| !c.is_ascii_alphanumeric())
            .map(|w| w.trim_start_matches('#'))
            .find(|w| w.len() >= 5 && w.len() <= 20 && w.chars().all(|c| c.is_ascii_digit()))
            .map(String::from)
    }
}

impl VirtualAgent for RuleBasedAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn greeting(&self) -> Option<String> {
        Some("Hi! I'm the virtual assistant. How can I help?".to_string())
    }

    fn respond(&self, memory: &mut BotMemory, text: &str) -> BotTurn {
        memory.turns += 1;
        let lower = text.to_lowercase();
        if let Some(n) = Self::order_number(text) {
            memory.collected.insert("order_number".to_string(), n);
        }
        if !memory.collected.contains_key("intent")
            && let Some(rule) = self
                .intents
                .iter()
                .find(|r| r.keywords.iter().any(|k| lower.contains(k.as_str())))
        {
            memory
                .collected
                .insert("intent".to_string(), rule.intent.clone());
        }
        let rule = memory
            .collected
            .get("intent")
            .and_then(|i| self.intents.iter().find(|r| &r.intent == i));
        let escalate = |queue: Option<String>| BotTurn::Escalate {
            reply:
                "Let me connect you with a colleague who can help; they will see what you told me."
                    .to_string(),
            queue,
        };
        let asks_for_a_person = lower
            .split(|c: char| !c.is_alphanumeric())
            .any(|word| self.handoff_words.iter().any(|w| w == word));
        if asks_for_a_person {
            return escalate(
                rule.and_then(|r| r.queue.clone())
                    .or(self.default_queue.clone()),
            );
        }
        match rule {
            None if memory.turns >= self.max_turns => escalate(self.default_queue.clone()),
            None => BotTurn::Reply(
                "Could you tell me what it is about (order status, refund, complaint)?".to_string(),
            ),
            Some(r) if r.needs_order_number && !memory.collected.contains_key("order_number") => {
                if memory.turns >= self.max_turns {
                    escalate(r.queue.clone().or(self.default_queue.clone()))
                } else {
                    BotTurn::Reply("What is your order number?".to_string())
                }
            }
            Some(r) => match &r.resolution {
                Some(answer) => BotTurn::Resolve(
                    answer.replace(
                        "{order_number}",
                        memory
                            .collected
                            .get("order_number")
                            .map(String::as_str)
                            .unwrap_or(""),
                    ),
                ),
                None => escalate(r.queue.clone().or(self.default_queue.clone())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_intent_and_order_then_resolves() {
        let bot = RuleBasedAgent::demo();
        let mut m = BotMemory::default();
        assert!(
            matches!(bot.respond(&mut m, "where is my parcel?"), BotTurn::Reply(r) if r.contains("order number"))
        );
        assert_eq!(m.collected["intent"], "order_status");
        let t = bot.respond(&mut m, "it's #123456");
        assert_eq!(
            t,
            BotTurn::Resolve("Order 123456 is on its way and arrives in 2 days.".into())
        );
    }

    #[test]
    fn refunds_escalate_with_what_was_collected() {
        let bot = RuleBasedAgent::demo();
        let mut m = BotMemory::default();
        bot.respond(&mut m, "I want a refund");
        let t = bot.respond(&mut m, "order 99887766");
        assert!(matches!(t, BotTurn::Escalate { .. }));
        assert_eq!(m.collected["intent"], "refund");
        assert_eq!(m.collected["order_number"], "99887766");
    }

    #[test]
    fn hand_off_words_are_whole_words() {
        let bot = RuleBasedAgent::demo();
        let mut m = BotMemory::default();
        assert!(matches!(
            bot.respond(&mut m, "the reagent in my kit"),
            BotTurn::Reply(_)
        ));
    }

    #[test]
    fn asking_for_a_person_escalates_at_once() {
        let bot = RuleBasedAgent::demo();
        let mut m = BotMemory::default();
        assert!(matches!(
            bot.respond(&mut m, "let me talk to a human"),
            BotTurn::Escalate { .. }
        ));
    }
}
