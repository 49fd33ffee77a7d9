//! The push side of a round: this node's log, as the store writes it, sent to the peer a
//! page at a time, each page's position saved once the peer has accepted it.

use super::{now_ms, Round, SyncManager};
use crate::error::Result;
use crate::store::{Checkpoint, CheckpointDirection};
use crate::wire::page::PAGE_ZSTD_LEVEL;
use crate::wire::{PageWriter, PeerRoundStats};

impl SyncManager {
    /// Pushes this node's log from the peer's push checkpoint, a page at a time.
    pub(super) async fn push(&self, round: &Round<'_>, stats: &mut PeerRoundStats) -> Result<()> {
        let Round {
            cfg,
            client,
            wm,
            batch,
            ..
        } = *round;
        let (key, mut cursor, filter) = self.resume(round, CheckpointDirection::Push).await?;
        loop {
            // The page travels as the store wrote it (for SQLite, the stored JSON), compressed.
            let mut out = PageWriter::zstd_above_min(PAGE_ZSTD_LEVEL);
            out.begin_changes()?;
            let (mut out, page) = self
                .store
                .write_changes(cursor, batch, &filter, out)
                .await?;
            out.end_push(page.watermark)?;
            if page.count > 0 {
                let n = page.count as u64;
                let zstd = out.is_compressed();
                let resp = client.push_json(out.finish()?, zstd).await?;
                stats.pushed += n;
                stats.conflicts += resp.conflicts.len() as u64;
            }
            if page.watermark > cursor {
                self.store
                    .save_checkpoint(Checkpoint {
                        key: key.clone(),
                        incarnation: wm.incarnation.clone(),
                        cursor: page.watermark,
                        updated_ms: now_ms(),
                    })
                    .await?;
                cursor = page.watermark;
                self.update_status(&cfg.peer_id, |s| s.push_checkpoint = Some(cursor));
            }
            if !page.has_more {
                return Ok(());
            }
        }
    }
}
