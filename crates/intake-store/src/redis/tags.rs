//! Tags on messages (`P t:<id>`, `P tag:<tag>`, `P tags`), each change one script; a
//! deleted message's tags go in the same script that deletes it.

use super::*;

#[async_trait]
impl intake_core::TagBackend for RedisBackend {
    async fn tags_get(&self, id: MessageId) -> Result<Option<Vec<String>>, StoreError> {
        let i = &self.inner;
        let mut conn = i.conn();
        let mut inv = i.scripts.tags_get.prepare_invoke();
        inv.arg(i.prefix()).arg(id.to_string());
        let mut got: Vec<String> = i.call("tags get", inv.invoke_async(&mut conn)).await?;
        if got.is_empty() {
            return Ok(None);
        }
        got.remove(0);
        got.sort();
        Ok(Some(got))
    }

    async fn tags_put(&self, id: MessageId, tags: &[String]) -> Result<bool, StoreError> {
        self.writable()?;
        let i = &self.inner;
        let mut conn = i.conn();
        let mut inv = i.scripts.tags_put.prepare_invoke();
        inv.arg(i.prefix()).arg(id.to_string());
        for t in tags {
            inv.arg(t);
        }
        let n: i64 = i.call("tags put", inv.invoke_async(&mut conn)).await?;
        Ok(n == 1)
    }

    async fn tags_all(&self) -> Result<Vec<String>, StoreError> {
        let i = &self.inner;
        let mut conn = i.conn();
        let mut all: Vec<String> = i
            .call(
                "tags SMEMBERS",
                redis::cmd("SMEMBERS")
                    .arg(i.key("tags"))
                    .query_async(&mut conn),
            )
            .await?;
        all.sort();
        Ok(all)
    }

    async fn tags_rename(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        self.rename_or_remove(from, to).await
    }

    async fn tags_remove(&self, tag: &str) -> Result<u64, StoreError> {
        self.rename_or_remove(tag, "").await
    }
}

impl RedisBackend {
    async fn rename_or_remove(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        self.writable()?;
        let i = &self.inner;
        let mut conn = i.conn();
        let mut inv = i.scripts.tags_rename.prepare_invoke();
        inv.arg(i.prefix()).arg(from).arg(to);
        let n: i64 = i.call("tags rename", inv.invoke_async(&mut conn)).await?;
        Ok(n.max(0) as u64)
    }
}
