//! The catalogue of every fixed reply Intake sends, in one place to review.
//!
//! Codes follow RFC 5321 §4.2.2/§4.2.3, enhanced codes RFC 3463 and the IANA registry
//! ("Enumerated Status Codes"). Our own failures are always 4xx: a 5xx would make the
//! sending server bounce a message we merely failed to store.

use crate::reply::{EnhancedStatus as S, Reply};

// 2xx
/// Generic success (RSET, NOOP).
pub const OK: Reply = Reply::new(250, S(2, 0, 0), "OK");
/// MAIL FROM accepted.
pub const SENDER_OK: Reply = Reply::new(250, S(2, 1, 0), "Sender OK");
/// RCPT TO accepted.
pub const RECIPIENT_OK: Reply = Reply::new(250, S(2, 1, 5), "Recipient OK");
/// QUIT.
pub const BYE: Reply = Reply::new(221, S(2, 0, 0), "Bye");
/// VRFY: we never confirm or deny an address (RFC 5321 §3.5.3, §7.3).
pub const VRFY: Reply = Reply::new(
    252,
    S(2, 5, 0),
    "Cannot VRFY user, but will accept message and attempt delivery",
);
/// HELP.
pub const HELP: Reply = Reply::new(
    214,
    S(2, 0, 0),
    "Intake receives mail. Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT",
);
/// A BDAT chunk that was not the last one was received.
pub const CHUNK_OK: Reply = Reply::new(250, S(2, 0, 0), "Chunk received");

/// STARTTLS accepted: the handshake follows.
pub const READY_FOR_TLS: Reply = Reply::new(220, S(2, 0, 0), "Ready to start TLS");

// 3xx
/// DATA accepted: send the message.
pub const START_DATA: Reply = Reply::new(354, S(2, 0, 0), "Send message, end with <CRLF>.<CRLF>");

// 4xx
/// Too many recipients in one transaction (RFC 5321 §4.5.3.1.10).
pub const TOO_MANY_RECIPIENTS: Reply = Reply::new(452, S(4, 5, 3), "Too many recipients");
/// The store failed; the client should retry later.
pub const STORE_FAILED: Reply = Reply::new(
    451,
    S(4, 3, 0),
    "Message not stored: temporary local problem, try again later",
);
/// A delivery target (relay, webhook, program) failed temporarily with nothing of its own
/// to say (timeout, no connection, a crash): the client should retry later.
pub const DELIVERY_DEFERRED: Reply = Reply::new(
    451,
    S(4, 4, 0),
    "Message not delivered: temporary problem downstream, try again later",
);
/// Several recipients, and not all of them took the message: the client retries the
/// whole message (an SMTP server has only one reply after DATA).
pub const DELIVERY_PARTIAL: Reply = Reply::new(
    451,
    S(4, 5, 0),
    "Message not delivered to every recipient, try again later",
);
/// A delivery target refused the message for good with nothing of its own to say.
pub const DELIVERY_REFUSED: Reply =
    Reply::new(550, S(5, 0, 0), "Message refused by the delivery target");
/// Too many errors in one session.
pub const TOO_MANY_ERRORS: Reply =
    Reply::new(421, S(4, 7, 0), "Too many errors, closing connection");
/// No command within the idle timeout.
pub const TIMEOUT: Reply = Reply::new(421, S(4, 4, 2), "Timeout, closing connection");
/// The server is shutting down.
pub const SHUTTING_DOWN: Reply =
    Reply::new(421, S(4, 3, 2), "Server shutting down, try again later");
/// Over the connection limit.
pub const TOO_MANY_CONNECTIONS: Reply =
    Reply::new(421, S(4, 7, 0), "Too many connections, try again later");

/// Over the per-client connection count.
pub const TOO_MANY_CONNECTIONS_FROM_CLIENT: Reply = Reply::new(
    421,
    S(4, 7, 0),
    "Too many connections from your address, try again later",
);
/// Over the per-client connection rate.
pub const CONNECTION_RATE: Reply = Reply::new(
    421,
    S(4, 7, 0),
    "Too many connections from your address, slow down",
);
/// Over the per-client message rate.
pub const MESSAGE_RATE: Reply = Reply::new(
    450,
    S(4, 7, 1),
    "Too many messages from your address, try again later",
);
/// Over the per-client recipient rate.
pub const RECIPIENT_RATE: Reply = Reply::new(
    450,
    S(4, 7, 1),
    "Too many recipients from your address, try again later",
);
/// Over the messages allowed in one connection.
pub const TOO_MANY_MESSAGES_PER_CONNECTION: Reply = Reply::new(
    421,
    S(4, 7, 0),
    "Too many messages in one connection, reconnect",
);
/// A policy check could not decide and is configured to defer (our failure: never 5xx).
pub const CHECK_UNAVAILABLE: Reply = Reply::new(
    451,
    S(4, 4, 3),
    "Unable to verify at this time, try again later",
);
/// Greylisting: first time this client, sender and recipient are seen (RFC 6647).
pub const GREYLISTED: Reply = Reply::new(451, S(4, 7, 1), "Greylisted, please try again later");
/// A check deferred; its own text usually replaces this one.
pub const POLICY_DEFERRED: Reply =
    Reply::new(451, S(4, 7, 1), "Deferred by policy, try again later");
/// The sender's SPF record could not be read now (RFC 7372 §3.2: 4.7.24).
pub const SPF_TEMP_ERROR: Reply =
    Reply::new(451, S(4, 7, 24), "SPF validation error, try again later");
/// A connect-stage check deferred: the session ends.
pub const CONNECTION_DEFERRED: Reply = Reply::new(
    421,
    S(4, 7, 0),
    "Service temporarily unavailable, try again later",
);
/// The whole-session deadline passed.
pub const SESSION_TOO_LONG: Reply = Reply::new(421, S(4, 4, 2), "Session open too long, closing");

// 5xx: the client's mistakes
/// The client sent data before the greeting.
pub const EARLY_TALKER: Reply = Reply::new(
    554,
    S(5, 5, 1),
    "Protocol error: talked before the greeting",
);
/// Pipelined commands before PIPELINING was offered (RFC 2920 §3.1).
pub const UNAUTHORIZED_PIPELINING: Reply =
    Reply::new(503, S(5, 5, 0), "Improper use of SMTP command pipelining");
/// Unknown verb.
pub const UNKNOWN_COMMAND: Reply = Reply::new(500, S(5, 5, 1), "Command unrecognized");
/// Command line longer than the limit.
pub const LINE_TOO_LONG: Reply = Reply::new(500, S(5, 5, 2), "Line too long");
/// A command line with a bare CR or LF.
pub const BARE_LINE_ENDING_COMMAND: Reply = Reply::new(
    500,
    S(5, 5, 2),
    "Bare CR or LF in command: lines must end with CRLF",
);
/// A command with a NUL byte or other control characters.
pub const INVALID_CHARACTERS: Reply = Reply::new(500, S(5, 5, 2), "Invalid characters in command");
/// MAIL before STARTTLS on a listener that requires TLS (RFC 3207 §4).
pub const TLS_REQUIRED: Reply = Reply::new(530, S(5, 7, 0), "Must issue a STARTTLS command first");
/// STARTTLS inside TLS.
pub const TLS_ALREADY_ACTIVE: Reply = Reply::new(503, S(5, 5, 1), "TLS already active");
/// The TLS handshake failed (sent in plaintext is impossible; logged only).
pub const TLS_UNAVAILABLE: Reply =
    Reply::new(454, S(4, 7, 0), "TLS not available due to temporary reason");
/// Known verb that Intake does not implement.
pub const NOT_IMPLEMENTED: Reply = Reply::new(502, S(5, 5, 1), "Command not implemented");
/// AUTH succeeded (RFC 4954 §6).
pub const AUTH_OK: Reply = Reply::new(235, S(2, 7, 0), "Authentication successful");
/// Wrong login: unknown user, disabled user and wrong password look the same.
pub const AUTH_INVALID: Reply = Reply::new(535, S(5, 7, 8), "Authentication credentials invalid");
/// Users could not be read, or too many failed logins lately (RFC 4954 §6: 454 4.7.0).
pub const AUTH_TEMPORARY: Reply = Reply::new(
    454,
    S(4, 7, 0),
    "Temporary authentication failure, try again later",
);
/// AUTH before TLS on a listener that allows it only over TLS (RFC 4954 §6).
pub const AUTH_NEEDS_TLS: Reply = Reply::new(
    538,
    S(5, 7, 11),
    "Encryption required for requested authentication mechanism",
);
/// A mechanism we do not offer.
pub const AUTH_MECHANISM: Reply = Reply::new(504, S(5, 5, 4), "Unrecognized authentication type");
/// The client cancelled the exchange with `*`, or sent something that is not base64.
pub const AUTH_CANCELLED: Reply =
    Reply::new(501, S(5, 5, 2), "Authentication cancelled or malformed");
/// AUTH after a successful AUTH, or inside a transaction.
pub const AUTH_ALREADY: Reply = Reply::new(503, S(5, 5, 1), "Already authenticated");
/// MAIL without AUTH on a listener that requires it (RFC 4954 §6).
pub const AUTH_REQUIRED: Reply = Reply::new(530, S(5, 7, 0), "Authentication required");
/// MAIL FROM with an address the logged-in user may not use.
pub const SENDER_NOT_OWNED: Reply = Reply::new(
    553,
    S(5, 7, 1),
    "Sender address not owned by the authenticated user",
);
/// Command out of sequence.
pub const BAD_SEQUENCE: Reply = Reply::new(503, S(5, 5, 1), "Bad sequence of commands");
/// MAIL before EHLO/HELO.
pub const HELO_FIRST: Reply = Reply::new(503, S(5, 5, 1), "Say EHLO or HELO first");
/// MAIL while a transaction is open.
pub const NESTED_MAIL: Reply = Reply::new(503, S(5, 5, 1), "Sender already specified");
/// RCPT before MAIL.
pub const MAIL_FIRST: Reply = Reply::new(503, S(5, 5, 1), "Need MAIL before RCPT");
/// DATA/BDAT without any accepted recipient.
pub const RCPT_FIRST: Reply = Reply::new(503, S(5, 5, 1), "Need RCPT before DATA");
/// DATA after BDAT in the same transaction, or the reverse (RFC 3030 §2).
pub const DATA_BDAT_MIX: Reply = Reply::new(503, S(5, 5, 1), "DATA and BDAT cannot be mixed");
/// EHLO/HELO without a name when lenient HELO is off.
pub const HELO_NEEDS_NAME: Reply = Reply::new(501, S(5, 5, 4), "EHLO/HELO requires a domain name");
/// Bad argument syntax; the text names the expected grammar.
pub const SYNTAX: Reply = Reply::new(501, S(5, 5, 4), "Syntax error");
/// Malformed sender address.
pub const BAD_SENDER: Reply = Reply::new(501, S(5, 1, 7), "Bad sender address syntax");
/// Malformed recipient address.
pub const BAD_RECIPIENT: Reply = Reply::new(501, S(5, 1, 3), "Bad recipient address syntax");
/// A parameter we do not support.
pub const UNSUPPORTED_PARAMETER: Reply =
    Reply::new(555, S(5, 5, 4), "Unsupported MAIL/RCPT parameter");
/// A parameter with a bad value.
pub const INVALID_PARAMETER: Reply = Reply::new(501, S(5, 5, 4), "Invalid parameter value");
/// Non-ASCII address without SMTPUTF8 (RFC 6531 §3.4).
pub const NEEDS_SMTPUTF8: Reply = Reply::new(
    553,
    S(5, 6, 7),
    "Non-ASCII address requires the SMTPUTF8 parameter on MAIL",
);
/// Declared SIZE over the limit (RFC 1870).
pub const SIZE_EXCEEDED_DECLARED: Reply = Reply::new(
    552,
    S(5, 3, 4),
    "Message size exceeds fixed maximum message size",
);
/// Message over the size limit, answered after the end of data.
pub const MESSAGE_TOO_BIG: Reply = Reply::new(
    552,
    S(5, 3, 4),
    "Message too big: exceeds fixed maximum message size",
);
/// Recipient domain is not one of ours.
pub const RELAY_DENIED: Reply = Reply::new(550, S(5, 7, 1), "Relay access denied");
/// A message that contained bare CR or LF characters (SMTP smuggling defence).
pub const BARE_LINE_ENDING_DATA: Reply = Reply::new(
    550,
    S(5, 6, 0),
    "Message rejected: bare CR or LF found, lines must end with CRLF",
);
/// A recipient the recipient check does not know (RFC 3463 X.1.1).
pub const UNKNOWN_RECIPIENT: Reply =
    Reply::new(550, S(5, 1, 1), "Recipient address rejected: user unknown");
/// A check rejected; its own text usually replaces this one.
pub const POLICY_REJECTED: Reply = Reply::new(550, S(5, 7, 1), "Refused by policy");
/// The sender's SPF record refuses the client (RFC 7372 §3.2: 5.7.23).
pub const SPF_FAILED: Reply = Reply::new(550, S(5, 7, 23), "SPF validation failed");
/// A virus scanner found something; the text names the signature.
pub const VIRUS_FOUND: Reply = Reply::new(554, S(5, 7, 1), "Message refused: virus found");
/// A connect-stage check rejected the client: the session ends.
pub const CONNECTION_REJECTED: Reply = Reply::new(554, S(5, 7, 1), "Connection refused by policy");
/// Null recipient or otherwise unacceptable destination.
pub const BAD_DESTINATION: Reply = Reply::new(550, S(5, 1, 1), "Bad destination mailbox address");
/// Mailpit's chaos trigger fired at `what` (`sender`, `recipient`, `authentication`): the
/// code it was set to and Mailpit's own text, without an enhanced status (as Mailpit).
pub fn chaos(code: u16, what: &str) -> Reply {
    Reply::plain(code, format!("Chaos {what} error"))
}
