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
        Ok(v.as_deref().and_then(GreyRecord::from_text))
    }

    async fn greylist_put(&self, key: &str, r: GreyRecord) -> Result<(), StoreError> {
        self.writable()?;
        let i = &self.inner;
        let mut conn = i.conn();
        let mut inv = i.scripts.grey_put.prepare_invoke();
        inv.arg(i.prefix())
            .arg(key)
            .arg(r.to_text())
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
