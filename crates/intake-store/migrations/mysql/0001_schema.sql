-- Intake on MariaDB / MySQL: the first schema.
--
-- InnoDB everywhere (transactions, crash recovery, FULLTEXT), utf8mb4. Free text (header
-- fields, the envelope) is utf8mb4_unicode_ci, so searches ignore case and accents; keys
-- (mailboxes, aliases, recipients, users, greylist keys) are utf8mb4_bin: the layer above
-- lower-cases them, and two different addresses must never compare equal.
--
-- A message is keyed by its id (a UUIDv7, BINARY(16)), which sorts by time of receipt, so
-- a batch of messages is written with one multi-row INSERT per table (no auto-increment
-- values to read back). Every statement is idempotent (IF NOT EXISTS), so that an
-- interrupted first start can be completed by hand.

-- One row of metadata per message (listings scan these small rows, never the bodies).
CREATE TABLE IF NOT EXISTS messages (
    id               BINARY(16)  NOT NULL,
    received_at      BIGINT      NOT NULL,
    mail_from        MEDIUMTEXT  NOT NULL,
    rcpt_to          MEDIUMTEXT  NOT NULL,
    helo             MEDIUMTEXT  NOT NULL,
    client_ip        VARCHAR(64) NOT NULL,
    client_port      INT         NOT NULL,
    tls_version      MEDIUMTEXT  NULL,
    tls_cipher       MEDIUMTEXT  NULL,
    size             BIGINT      NOT NULL,
    sha256           CHAR(64)    NOT NULL,
    message_id       MEDIUMTEXT  NULL,
    from_addr        MEDIUMTEXT  NULL,
    to_addr          MEDIUMTEXT  NULL,
    cc_addr          MEDIUMTEXT  NULL,
    subject          MEDIUMTEXT  NULL,
    date             MEDIUMTEXT  NULL,
    content_type     MEDIUMTEXT  NULL,
    charset          MEDIUMTEXT  NULL,
    attachments      MEDIUMTEXT  NOT NULL,
    attachment_count INT         NOT NULL,
    seen             BOOLEAN     NOT NULL DEFAULT FALSE,
    PRIMARY KEY (id),
    KEY messages_received_at (received_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The raw bytes, in parts of at most a chunk each (see `store.max_allowed_packet` in the
-- docs): no single row or statement comes near the server's max_allowed_packet, whatever
-- the message size.
CREATE TABLE IF NOT EXISTS bodies (
    id   BINARY(16) NOT NULL,
    part INT        NOT NULL,
    data LONGBLOB   NOT NULL,
    PRIMARY KEY (id, part)
) ENGINE = InnoDB;

-- A message filed under each distinct mailbox (stored once whatever the recipients).
CREATE TABLE IF NOT EXISTS mailbox_messages (
    mailbox VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    id      BINARY(16) NOT NULL,
    PRIMARY KEY (mailbox, id),
    KEY mailbox_messages_id (id)
) ENGINE = InnoDB;

-- What the policy checks found about a message (JSON), when they found anything.
CREATE TABLE IF NOT EXISTS message_checks (
    id       BINARY(16) NOT NULL,
    findings MEDIUMTEXT NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The full-text index keeps every word: no stopword list (InnoDB reads this setting when
-- the index is created, so the server's own list does not apply to it).
SET SESSION innodb_ft_enable_stopword = OFF;

-- Search: subject, addresses, header values and body text of each message, written in the
-- same transaction as the message. InnoDB tokenizes it at COMMIT, so a message is
-- searchable as soon as its sender has the 250.
CREATE TABLE IF NOT EXISTS search_text (
    id    BINARY(16) NOT NULL,
    words MEDIUMTEXT NOT NULL,
    PRIMARY KEY (id),
    FULLTEXT KEY search_text_words (words)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS aliases (
    alias   VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    mailbox VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    PRIMARY KEY (alias)
) ENGINE = InnoDB;

-- Small settings shared by every node on this database: the alias secret.
CREATE TABLE IF NOT EXISTS meta (
    k     VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    value MEDIUMTEXT NOT NULL,
    PRIMARY KEY (k)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Valid recipients: lower-cased addresses, or `@domain` for every address of a domain.
CREATE TABLE IF NOT EXISTS recipients (
    address VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    PRIMARY KEY (address)
) ENGINE = InnoDB;

-- Greylisting: `t <network> <sender> <recipient>` triplets and `c <network>` clients.
CREATE TABLE IF NOT EXISTS greylist (
    k          VARCHAR(760) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    passes     BIGINT NOT NULL,
    PRIMARY KEY (k),
    KEY greylist_last_seen (last_seen)
) ENGINE = InnoDB;

-- SMTP AUTH users: lower-cased address, password hash, enabled flag, the envelope senders
-- the user may use (JSON array).
CREATE TABLE IF NOT EXISTS users (
    address       VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    password_hash MEDIUMTEXT NOT NULL,
    enabled       BOOLEAN NOT NULL DEFAULT TRUE,
    senders       MEDIUMTEXT NOT NULL,
    PRIMARY KEY (address)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
