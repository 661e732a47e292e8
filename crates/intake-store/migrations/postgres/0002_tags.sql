-- Tags on messages (Mailpit's tags), compared exactly; gone with their message.
CREATE TABLE message_tags (
    seq bigint NOT NULL REFERENCES messages (seq) ON DELETE CASCADE,
    tag text NOT NULL,
    PRIMARY KEY (seq, tag)
);
CREATE INDEX message_tags_tag ON message_tags (tag);
