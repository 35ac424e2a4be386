//! Callbacks of outside work: where it reports on a job, and the token
//! that proves the report comes from whoever got the job.

use super::*;

/// How outside work reports back: a URL template (`{job}` is replaced by
/// the job id) that the host serves and routes to [`Jobs::report`](super::Jobs::report),
/// and the secret of the tokens. A token is the HMAC-SHA256 of the job id
/// under the secret, so nothing is stored and a restarted runtime with the
/// same secret accepts the reports of jobs dispatched before. The secret's
/// `Debug` prints `***`.
#[derive(Clone)]
pub struct JobCallbacks {
    url: String,
    secret: Vec<u8>,
}

impl JobCallbacks {
    /// Callbacks at `url` (with `{job}` in it), tokens signed with `secret`.
    pub fn new(url: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            url: url.into(),
            secret: secret.into(),
        }
    }

    fn mac(&self, job: JobId) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).ok()?;
        mac.update(b"thinklio.job:");
        mac.update(job.to_string().as_bytes());
        Some(mac)
    }

    /// The callback of `job`.
    pub fn callback(&self, job: JobId) -> JobCallback {
        let token = self
            .mac(job)
            .map(|m| hex(&m.finalize().into_bytes()))
            .unwrap_or_default();
        JobCallback::new(self.url.replace("{job}", &job.to_string()), token)
    }

    /// Whether `token` is the token of `job` (compared in constant time).
    pub fn verify(&self, job: JobId, token: &str) -> bool {
        let Some(bytes) = unhex(token) else {
            return false;
        };
        self.mac(job)
            .is_some_and(|m| m.verify_slice(&bytes).is_ok())
    }
}

impl fmt::Debug for JobCallbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobCallbacks")
            .field("url", &self.url)
            .field("secret", &"***")
            .finish()
    }
}

// Two small helpers rather than a crate: the token is the only hex in core.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
