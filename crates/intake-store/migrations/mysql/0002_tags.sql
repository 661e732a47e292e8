-- Tags on messages (Mailpit's tags), compared exactly (utf8mb4_bin); deleted with their
-- message (the delete lists this table). Idempotent, like the first schema.
CREATE TABLE IF NOT EXISTS message_tags (
    id  BINARY(16)   NOT NULL,
    tag VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    PRIMARY KEY (id, tag),
    KEY message_tags_tag (tag)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
