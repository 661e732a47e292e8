//! Greylisting records (`P grey`, with their last sight in `P grey_seen` for expiry).

use super::*;

#[async_trait]
impl PolicyBackend for RedisBackend {
    async fn greylist_get(&self, key: &str) -> Result<Option<GreyRecord>, StoreError> {
        let i = &self.inner;
        let mut conn = i.conn();
        let v: Option<String> = i
            .call(
                "greylist HGET",
                redis::cmd("HGET")
                    .arg(i.key("grey"))
                    .arg(key)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(v.as_deref().and_then(parse_grey))
    }

    async fn greylist_put(&self, key: &str, r: GreyRecord) -> Result<(), StoreError> {
        self.writable()?;
        let i = &self.inner;
        let mut conn = i.conn();
        let mut inv = i.scripts.grey_put.prepare_invoke();
        inv.arg(i.prefix())
            .arg(key)
            .arg(format!("{} {} {}", r.first_seen, r.last_seen, r.passes))
            .arg(r.last_seen);
        i.call("greylist put", inv.invoke_async::<()>(&mut conn))
            .await
    }

    async fn greylist_expire(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.writable()?;
        let i = &self.inner;
        let mut conn = i.conn();
        let mut inv = i.scripts.grey_expire.prepare_invoke();
        inv.arg(i.prefix()).arg(before_ms);
        i.call("greylist expire", inv.invoke_async(&mut conn)).await
    }
}

fn parse_grey(v: &str) -> Option<GreyRecord> {
    let mut it = v.split(' ');
    let r = GreyRecord {
        first_seen: it.next()?.parse().ok()?,
        last_seen: it.next()?.parse().ok()?,
        passes: it.next()?.parse().ok()?,
    };
    it.next().is_none().then_some(r)
}
