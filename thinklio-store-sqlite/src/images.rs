//! `ImageStore` on SQLite: images messages carried, stored once.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use thinklio_core::{Image, ImageId, ImageSource, ImageStore, NewImage, StoreError, StoreResult};

use crate::SqliteStore;
use crate::rows::{self, IMAGE_COLUMNS, backend};

#[async_trait]
impl ImageStore for SqliteStore {
    async fn put_image(&self, new: NewImage) -> StoreResult<Image> {
        let image = new.created(ImageId::new(), self.clock.now());
        self.conn
            .call(move |c| {
                let i = &image;
                let (data, url) = match &i.source {
                    ImageSource::Bytes(data) => (Some(&data[..]), None),
                    ImageSource::Url(url) => (None, Some(url.as_str())),
                    _ => return Err(StoreError::Corrupt("an image source this store cannot keep".into())),
                };
                // One row per user and content: a second write of the same
                // image returns the first.
                let inserted = c
                    .prepare_cached(&format!(
                        "INSERT INTO images ({IMAGE_COLUMNS}) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                         ON CONFLICT (account_id, user_id, sha256) DO NOTHING"
                    ))
                    .map_err(backend)?
                    .execute(params![
                        i.id.to_string(),
                        i.principal.account.to_string(),
                        i.principal.team.map(|t| t.to_string()),
                        i.principal.user.to_string(),
                        i.sha256,
                        i.format.map(|f| f.as_str()),
                        i.size.map(|s| s.0),
                        i.size.map(|s| s.1),
                        data,
                        url,
                        i.created_at.as_millis(),
                    ])
                    .map_err(backend)?;
                if inserted == 1 {
                    return Ok(image);
                }
                c.prepare_cached(&format!(
                    "SELECT {IMAGE_COLUMNS} FROM images WHERE account_id = ?1 AND user_id = ?2 AND sha256 = ?3"
                ))
                .map_err(backend)?
                .query_row(
                    params![
                        i.principal.account.to_string(),
                        i.principal.user.to_string(),
                        i.sha256
                    ],
                    rows::image,
                )
                .map_err(backend)
            })
            .await
    }

    async fn image(&self, id: ImageId) -> StoreResult<Image> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!("SELECT {IMAGE_COLUMNS} FROM images WHERE id = ?1"))
                    .map_err(backend)?
                    .query_row([id.to_string()], rows::image)
                    .optional()
                    .map_err(backend)?
                    .ok_or_else(|| StoreError::not_found("image", id))
            })
            .await
    }
}
