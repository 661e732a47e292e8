//! Mail on Redis: deliveries (through the group-commit writer), listings, search by
//! bounded scan, fetch, deletes, the read flag, eviction, aliases and meta.

use super::*;

#[async_trait]
impl MailBackend for RedisBackend {
    fn durability_warning(&self) -> Option<String> {
        self.weak.lock().expect("weak").clone()
    }

    async fn deliver(&self, msg: Incoming, mailboxes: Vec<String>) -> Result<(), StoreError> {
        self.inner.writable()?;
        let tx = self.tx.sender()?;
        let (done, wait) = oneshot::channel();
        // Its turn, then its batch: each bounded by the timeout.
        let bound = self.inner.opts.timeout * 2;
        let queued = tokio::time::timeout(bound, async {
            tx.send((Box::new((msg, mailboxes)), done))
                .await
                .map_err(|_| StoreError::Closed)?;
            wait.await.map_err(|_| StoreError::Closed)?
        })
        .await;
        match queued {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "Redis: delivery not committed within {bound:?}"
            ))),
        }
    }

    async fn list_mailbox(&self, mailbox: &str, page: Page) -> Result<Listing, StoreError> {
        self.list(format!("box:{mailbox}"), format!("unread:{mailbox}"), page)
            .await
    }

    async fn list_all(&self, page: Page) -> Result<Listing, StoreError> {
        self.list("all".into(), "unread".into(), page).await
    }

    async fn search(&self, query: &Query, page: Page) -> Result<Listing, StoreError> {
        let i = &self.inner;
        let zset = match &query.mailbox {
            Some(m) => i.key(&format!("box:{m}")),
            None => i.key("all"),
        };
        let mut out = Listing::default();
        let mut scanned: u64 = 0;
        let mut start: isize = 0;
        while scanned < i.opts.search_scan {
            let n = SEARCH_CHUNK.min((i.opts.search_scan - scanned) as isize);
            let mut conn = i.conn();
            let ids: Vec<String> = i
                .call(
                    "search ZREVRANGE",
                    redis::cmd("ZREVRANGE")
                        .arg(&zset)
                        .arg(start)
                        .arg(start + n - 1)
                        .query_async(&mut conn),
                )
                .await?;
            if ids.is_empty() {
                break;
            }
            start += ids.len() as isize;
            scanned += ids.len() as u64;
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HMGET")
                    .arg(i.key(&format!("m:{id}")))
                    .arg(&["sum", "doc", "seen", "head", "text"])
                    .cmd("SMEMBERS")
                    .arg(i.key(&format!("mb:{id}")));
            }
            type Row = (
                (
                    Option<String>,
                    Option<String>,
                    Option<String>,
                    Option<String>,
                    Option<String>,
                ),
                Vec<String>,
            );
            let rows: Vec<Row> = i.call("search HMGET", pipe.query_async(&mut conn)).await?;
            for ((sum, doc, seen, head, text), boxes) in rows {
                let (Some(sum), Some(doc)) = (sum, doc) else {
                    continue; // deleted meanwhile
                };
                let m = stored(
                    &sum,
                    &doc,
                    seen.as_deref().unwrap_or("0"),
                    head.unwrap_or_default().into_bytes(),
                    boxes,
                )?;
                if !query.matches(&m, &m.mailboxes, text.as_deref().unwrap_or("")) {
                    continue;
                }
                if out.total >= page.offset && (out.messages.len() as u64) < page.limit {
                    out.messages.push(Summary::from(&m));
                }
                out.total += 1;
                if !m.seen {
                    out.unread += 1;
                }
            }
        }
        Ok(out)
    }

    async fn fetch(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        let i = &self.inner;
        let mut conn = i.conn();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HMGET")
            .arg(i.key(&format!("m:{id}")))
            .arg(&["sum", "doc", "seen"])
            .cmd("GET")
            .arg(i.key(&format!("b:{id}")))
            .cmd("SMEMBERS")
            .arg(i.key(&format!("mb:{id}")));
        type Got = (
            (Option<String>, Option<String>, Option<String>),
            Option<Vec<u8>>,
            Vec<String>,
        );
        let ((sum, doc, seen), raw, boxes): Got =
            i.call("fetch", pipe.query_async(&mut conn)).await?;
        let (Some(sum), Some(doc), Some(raw)) = (sum, doc, raw) else {
            return Ok(None);
        };
        stored(&sum, &doc, seen.as_deref().unwrap_or("0"), raw, boxes).map(Some)
    }

    async fn delete(&self, id: MessageId) -> Result<Option<Removal>, StoreError> {
        self.writable()?;
        let i = &self.inner;
        let mut conn = i.conn();
        let id = id.to_string();
        let mut inv = i.scripts.delete.prepare_invoke();
        inv.arg(i.prefix()).arg(&id);
        let boxes: Option<Vec<String>> = i.call("delete", inv.invoke_async(&mut conn)).await?;
        boxes.map(|b| removal(&id, b)).transpose()
    }

    async fn delete_mailbox(&self, mailbox: &str) -> Result<Vec<Removal>, StoreError> {
        self.writable()?;
        let i = &self.inner;
        let mut out = Vec::new();
        loop {
            let mut conn = i.conn();
            let mut inv = i.scripts.delete_mailbox.prepare_invoke();
            inv.arg(i.prefix()).arg(mailbox).arg(CHUNK);
            let ids: Vec<String> = i
                .call("deleting a mailbox", inv.invoke_async(&mut conn))
                .await?;
            if ids.is_empty() {
                break;
            }
            for id in ids {
                out.push(removal(&id, vec![mailbox.to_string()])?);
            }
        }
        Ok(out)
    }

    async fn set_seen(&self, id: MessageId, seen: bool) -> Result<bool, StoreError> {
        self.writable()?;
        let i = &self.inner;
        let mut conn = i.conn();
        let mut inv = i.scripts.set_seen.prepare_invoke();
        inv.arg(i.prefix())
            .arg(id.to_string())
            .arg(if seen { "1" } else { "0" });
        let n: i64 = i.call("set_seen", inv.invoke_async(&mut conn)).await?;
        Ok(n == 1)
    }

    async fn evict(&self, policy: &Retention, now_ms: i64) -> Result<Eviction, StoreError> {
        self.writable()?;
        let i = &self.inner;
        let mut out = Eviction::default();
        if let Some(keep) = policy.per_mailbox {
            for mailbox in self.mailboxes().await? {
                loop {
                    let mut conn = i.conn();
                    let mut inv = i.scripts.trim.prepare_invoke();
                    inv.arg(i.prefix()).arg(&mailbox).arg(keep).arg(CHUNK);
                    let done: Vec<(String, i64)> =
                        i.call("trimming", inv.invoke_async(&mut conn)).await?;
                    if done.is_empty() {
                        break;
                    }
                    for (id, deleted) in done {
                        out.evicted.by_mailbox_cap += u64::from(deleted == 1);
                        out.removed.push(removal(&id, vec![mailbox.clone()])?);
                    }
                }
            }
        }
        if let Some(age) = policy.max_age {
            let before = now_ms - age.as_millis() as i64;
            loop {
                let mut conn = i.conn();
                let ids: Vec<String> = i
                    .call(
                        "ZRANGEBYSCORE at",
                        redis::cmd("ZRANGEBYSCORE")
                            .arg(i.key("at"))
                            .arg("-inf")
                            .arg(format!("({before}"))
                            .arg("LIMIT")
                            .arg(0)
                            .arg(CHUNK)
                            .query_async(&mut conn),
                    )
                    .await?;
                if ids.is_empty() {
                    break;
                }
                let removed = self.delete_ids(&ids).await?;
                out.evicted.by_age += removed.len() as u64;
                out.removed.extend(removed);
            }
        }
        if let Some(max) = policy.max_bytes {
            loop {
                let mut conn = i.conn();
                let mut inv = i.scripts.evict_size.prepare_invoke();
                inv.arg(i.prefix()).arg(max).arg(CHUNK);
                let gone: Vec<(String, Vec<String>)> = i
                    .call("evicting by size", inv.invoke_async(&mut conn))
                    .await?;
                if gone.is_empty() {
                    break;
                }
                for (id, boxes) in gone {
                    out.evicted.by_size += 1;
                    out.removed.push(removal(&id, boxes)?);
                }
            }
        }
        let e = &mut out.evicted;
        e.messages = e.by_mailbox_cap + e.by_age + e.by_size;
        Ok(out)
    }

    async fn alias_put(&self, alias: &str, mailbox: &str) -> Result<(), StoreError> {
        self.writable()?;
        let i = &self.inner;
        let mut conn = i.conn();
        i.call(
            "alias SET",
            redis::cmd("SET")
                .arg(i.key(&format!("alias:{alias}")))
                .arg(mailbox)
                .query_async::<()>(&mut conn),
        )
        .await
    }

    async fn alias_get(&self, alias: &str) -> Result<Option<String>, StoreError> {
        let i = &self.inner;
        let mut conn = i.conn();
        i.call(
            "alias GET",
            redis::cmd("GET")
                .arg(i.key(&format!("alias:{alias}")))
                .query_async(&mut conn),
        )
        .await
    }

    async fn meta_get_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        self.writable()?;
        let i = &self.inner;
        let mut conn = i.conn();
        let k = i.key(&format!("meta:{key}"));
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SETNX")
            .arg(&k)
            .arg(value)
            .ignore()
            .cmd("GET")
            .arg(&k);
        let (v,): (String,) = i.call("meta SETNX", pipe.query_async(&mut conn)).await?;
        Ok(v)
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        self.tx.close();
        let task = self.writer.lock().expect("writer").take();
        if let Some(t) = task {
            let _ = t.await;
        }
        if let Some(n) = self.nag.lock().expect("nag").take() {
            n.abort();
        }
    }
}
