//! `ImageStore` on PostgreSQL: images messages carried, stored once.

use async_trait::async_trait;
use thinklio_core::{Image, ImageId, ImageSource, ImageStore, NewImage, StoreError, StoreResult};

use crate::PostgresStore;
use crate::rows::{self, IMAGE_COLUMNS, backend, query_opt};

#[async_trait]
impl ImageStore for PostgresStore {
    async fn put_image(&self, new: NewImage) -> StoreResult<Image> {
        let i = new.created(ImageId::new(), self.clock.now());
        let (data, url) = match &i.source {
            ImageSource::Bytes(data) => (Some(&data[..]), None),
            ImageSource::Url(url) => (None, Some(url.as_str())),
            _ => {
                return Err(StoreError::Corrupt(
                    "an image source this store cannot keep".into(),
                ));
            }
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        // One row per user and content: a second write of the same image
        // (here or through another worker) returns the first.
        query_opt(
            &tx,
            &format!(
                "INSERT INTO images ({IMAGE_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (account_id, user_id, sha256) DO NOTHING RETURNING id"
            ),
            &[
                &i.id.to_string(),
                &i.principal.account.to_string(),
                &i.principal.team.map(|t| t.to_string()),
                &i.principal.user.to_string(),
                &i.sha256,
                &i.format.map(|f| f.as_str()),
                &i.size.map(|s| i64::from(s.0)),
                &i.size.map(|s| i64::from(s.1)),
                &data,
                &url,
                &i.created_at.as_millis(),
            ],
        )
        .await?;
        let row = query_opt(
            &tx,
            &format!(
                "SELECT {IMAGE_COLUMNS} FROM images WHERE account_id = $1 AND user_id = $2 AND sha256 = $3"
            ),
            &[
                &i.principal.account.to_string(),
                &i.principal.user.to_string(),
                &i.sha256,
            ],
        )
        .await?
        .ok_or_else(|| StoreError::Conflict("the image could not be stored".into()))?;
        tx.commit().await.map_err(backend)?;
        rows::image(&row)
    }

    async fn image(&self, id: ImageId) -> StoreResult<Image> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            &format!("SELECT {IMAGE_COLUMNS} FROM images WHERE id = $1"),
            &[&id.to_string()],
        )
        .await?
        .ok_or_else(|| StoreError::not_found("image", id))?;
        rows::image(&row)
    }
}
