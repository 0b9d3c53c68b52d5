//! Writing a file so that a crash leaves either the old content or the new,
//! never a truncated file under the final name.

use std::io;
use std::path::Path;

/// Writes `bytes` next to `path`, then renames the result into place,
/// creating the parent directory if needed.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)
}
