-- Intake's PostgreSQL schema (store.type = "postgres"), applied by `intake serve` (and the
-- CLI's admin commands) through sqlx's migrator, under its advisory lock: several nodes
-- starting at once apply it once. Never edit a migration that has shipped; add the next one.

-- One row of metadata per message; the raw bytes are in `bodies`, so listings scan small rows.
CREATE TABLE messages (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           uuid NOT NULL UNIQUE,
    received_at  bigint NOT NULL,          -- Unix ms
    mail_from    text NOT NULL,
    rcpt_to      text[] NOT NULL,          -- the envelope as received
    helo         text NOT NULL,
    client_ip    text NOT NULL,
    client_port  integer NOT NULL,
    tls_version  text,
    tls_cipher   text,
    size         bigint NOT NULL,
    sha256       text NOT NULL,
    message_id   text,
    from_addr    text,
    to_addr      text,
    cc_addr      text,
    subject      text,
    date         text,
    content_type text,
    charset      text,
    attachments  jsonb NOT NULL,
    seen         boolean NOT NULL DEFAULT false
);
CREATE INDEX messages_received_at ON messages (received_at);

CREATE TABLE bodies (
    seq bigint PRIMARY KEY REFERENCES messages (seq) ON DELETE CASCADE,
    raw bytea NOT NULL
);

-- A message is filed once under each distinct (lower-cased) recipient mailbox.
CREATE TABLE mailbox_messages (
    mailbox text NOT NULL,
    seq     bigint NOT NULL REFERENCES messages (seq) ON DELETE CASCADE,
    PRIMARY KEY (mailbox, seq)
);
CREATE INDEX mailbox_messages_seq ON mailbox_messages (seq);

-- Full-text search: subject, addresses, body text and header values, folded to lower-case
-- words (anything not a letter or digit separates words), to_tsvector('simple', ..).
-- Written in the same transaction as the message.
CREATE TABLE search_index (
    seq bigint PRIMARY KEY REFERENCES messages (seq) ON DELETE CASCADE,
    doc tsvector NOT NULL
);
CREATE INDEX search_index_doc ON search_index USING gin (doc);

-- What the policy checks found, for messages they found something about.
CREATE TABLE message_checks (
    seq      bigint PRIMARY KEY REFERENCES messages (seq) ON DELETE CASCADE,
    findings jsonb NOT NULL
);

CREATE TABLE aliases (
    alias   text PRIMARY KEY,
    mailbox text NOT NULL
);

-- Small settings shared by every node on this database: the generated alias secret.
CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Policy state. Valid recipients: lower-cased addresses, or `@domain`.
CREATE TABLE recipients (
    address text PRIMARY KEY
);

-- Greylisting: `t <network> <sender> <recipient>` triplets and `c <network>` clients.
CREATE TABLE greylist (
    key        text PRIMARY KEY,
    first_seen bigint NOT NULL,
    last_seen  bigint NOT NULL,
    passes     integer NOT NULL
);
CREATE INDEX greylist_last_seen ON greylist (last_seen);

-- SMTP AUTH users.
CREATE TABLE users (
    address       text PRIMARY KEY,
    password_hash text NOT NULL,
    enabled       boolean NOT NULL DEFAULT true,
    senders       text[] NOT NULL DEFAULT '{}'
);
