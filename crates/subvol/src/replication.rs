//! `send` and `receive` as commands: where the bytes come from and go to,
//! age encryption around the stream, and progress on a terminal.

use crate::output::{emit, json};
use crate::progress::Bar;
use age::secrecy::SecretString;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use subvol_core::format_size;
use subvol_core::token::ResumeToken;
use subvol_pool::{Error, ErrorKind, Pool, ReceiveOptions, Result, StreamFile};

/// Start of every binary age file.
const AGE_MAGIC: &[u8] = b"age-encryption.org/";

pub struct SendArgs {
    pub snapshot: String,
    pub from: Option<String>,
    pub compress: Option<i32>,
    pub encrypt_to: Vec<String>,
    pub passphrase_file: Option<PathBuf>,
    pub output: Option<PathBuf>,
    /// Replace an existing output file.
    pub force: bool,
    pub resume: Option<String>,
    pub estimate: bool,
    pub json: bool,
}

fn read_passphrase(path: &Path) -> Result<SecretString> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(Error::invalid(format!("{} holds no passphrase", path.display())));
    }
    Ok(SecretString::from(line))
}

pub fn send(pool: &Pool, a: SendArgs) -> Result<()> {
    if a.estimate {
        let e = pool.send_estimate(&a.snapshot, a.from.as_deref())?;
        if a.json {
            json(&e);
        } else {
            emit(&format!("{} ({} bytes) in {} ranges\n", format_size(e.data_bytes), e.data_bytes, e.ranges));
        }
        return Ok(());
    }
    a.compress.map(subvol_pool::check_zstd_level).transpose()?;
    let resume =
        a.resume.as_deref().map(|t| t.parse::<ResumeToken>().map_err(|e| Error::invalid(e.to_string()))).transpose()?;
    // -o FILE: a private temporary file, renamed to FILE once complete.
    let mut file_sink = a.output.as_deref().map(|p| StreamFile::create(p, a.force)).transpose()?;
    let sink: Box<dyn Write + '_> = match &mut file_sink {
        Some(f) => Box::new(f),
        None => {
            if std::io::stdout().is_terminal() {
                return Err(Error::invalid(
                    "refusing to write a binary stream to a terminal; pipe it (| subvol receive NAME) or use -o FILE",
                ));
            }
            Box::new(std::io::stdout().lock())
        }
    };
    let sink = BufWriter::with_capacity(1 << 20, sink);
    let mut out: Box<dyn Write + '_> = if !a.encrypt_to.is_empty() || a.passphrase_file.is_some() {
        let enc = if let Some(p) = &a.passphrase_file {
            if !a.encrypt_to.is_empty() {
                return Err(Error::invalid("use either --encrypt-to or --passphrase-file, not both"));
            }
            age::Encryptor::with_user_passphrase(read_passphrase(p)?)
        } else {
            let mut recipients: Vec<age::x25519::Recipient> = Vec::new();
            for r in &a.encrypt_to {
                recipients.push(r.parse().map_err(|e| Error::invalid(format!("bad age recipient {r:?}: {e}")))?);
            }
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| Error::invalid(format!("cannot encrypt: {e}")))?
        };
        Box::new(EncryptedSink(Some(enc.wrap_output(sink).map_err(|e| Error::io("cannot start encryption", e))?)))
    } else {
        Box::new(sink)
    };
    let bar = Bar::new("sending");
    let r =
        pool.send(&a.snapshot, a.from.as_deref(), a.compress, resume.as_ref(), &mut *out, &|d, t| bar.update(d, t))?;
    out.flush().map_err(|e| Error::io("cannot finish the stream", e))?;
    drop(out);
    if let Some(f) = file_sink {
        f.commit()?;
    }
    bar.finish();
    if r.content_compared {
        eprintln!("subvol: note: no reflinks on this host: the increment was found by comparing contents");
    }
    if let Some(why) = &r.unverified {
        eprintln!("subvol: note: the stream carries no content root, so the receiver cannot verify it: {why}");
    }
    if a.json {
        // Standard output may be the stream itself.
        if a.output.is_some() {
            json(&r);
        } else {
            eprintln!("{}", serde_json::to_string(&r).unwrap_or_default());
        }
    } else if a.output.is_some() {
        emit(&format!("sent {}: {} data, {} stream bytes\n", r.name, format_size(r.data_bytes), r.stream_bytes));
    }
    Ok(())
}

/// An age writer that finishes (writes its last chunk) on flush-at-drop.
struct EncryptedSink<W: Write>(Option<age::stream::StreamWriter<W>>);

impl<W: Write> Write for EncryptedSink<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.0 {
            Some(w) => w.write(buf),
            None => Err(std::io::Error::other("stream already finished")),
        }
    }

    /// Flushing ends the age stream: it is only flushed once, at the end.
    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(w) = self.0.take() {
            let mut inner = w.finish()?;
            inner.flush()?;
        }
        Ok(())
    }
}

pub struct ReceiveArgs {
    pub name: String,
    pub resume: bool,
    pub abort: bool,
    pub token: bool,
    pub force: bool,
    pub identity: Vec<PathBuf>,
    pub passphrase_file: Option<PathBuf>,
    pub input: Option<PathBuf>,
    pub json: bool,
}

pub fn receive(pool: &Pool, a: ReceiveArgs) -> Result<()> {
    if a.abort {
        if pool.receive_abort(&a.name)? {
            emit(&format!("dropped the partial receive into {}\n", a.name));
        } else {
            emit(&format!("no partial receive into {}\n", a.name));
        }
        return Ok(());
    }
    if a.token {
        match pool.receive_token(&a.name)? {
            Some(t) => emit(&format!("{t}\n")),
            None => return Err(Error::new(ErrorKind::NotFound, format!("no partial receive into {}", a.name))),
        }
        return Ok(());
    }
    let source: Box<dyn Read> = match &a.input {
        Some(p) => Box::new(File::open(p).map_err(|e| Error::io(format!("cannot open {}", p.display()), e))?),
        None => {
            if std::io::stdin().is_terminal() {
                return Err(Error::invalid(
                    "standard input is a terminal; pipe a stream in (subvol send ... | subvol receive NAME)",
                ));
            }
            Box::new(std::io::stdin().lock())
        }
    };
    let mut buffered = BufReader::with_capacity(1 << 20, source);
    let head = buffered.fill_buf().map_err(|e| Error::io("cannot read the stream", e))?;
    let mut input: Box<dyn Read> = if head.starts_with(AGE_MAGIC) {
        let dec = age::Decryptor::new_buffered(buffered)
            .map_err(|e| Error::new(ErrorKind::Corrupt, format!("bad encrypted stream: {e}")))?;
        let reader = if dec.is_scrypt() {
            let p = a.passphrase_file.as_ref().ok_or_else(|| {
                Error::invalid("the stream is encrypted with a passphrase; give --passphrase-file FILE")
            })?;
            let id = age::scrypt::Identity::new(read_passphrase(p)?);
            dec.decrypt(std::iter::once(&id as &dyn age::Identity))
        } else {
            if a.identity.is_empty() {
                return Err(Error::invalid("the stream is encrypted; give --identity FILE (an age key file)"));
            }
            let mut ids: Vec<Box<dyn age::Identity + Send + Sync>> = Vec::new();
            for f in &a.identity {
                let file = age::IdentityFile::from_file(f.to_string_lossy().into_owned())
                    .map_err(|e| Error::io(format!("cannot read identity {}", f.display()), e))?;
                ids.extend(
                    file.into_identities()
                        .map_err(|e| Error::invalid(format!("bad identity file {}: {e}", f.display())))?,
                );
            }
            dec.decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
        }
        .map_err(|e| Error::new(ErrorKind::PermissionDenied, format!("cannot decrypt the stream: {e}")))?;
        Box::new(reader)
    } else {
        Box::new(buffered)
    };
    let bar = Bar::new("receiving");
    let r = pool.receive(&a.name, &mut *input, &ReceiveOptions { resume: a.resume, force: a.force }, &|d, _| {
        bar.update(d, 0)
    })?;
    bar.finish();
    if a.json {
        json(&r);
    } else {
        let mut msg =
            format!("received {} ({} data, {} stream bytes)", r.name, format_size(r.data_bytes), r.stream_bytes);
        if let Some(n) = &r.note {
            msg.push_str(&format!("; {n}"));
        }
        msg.push('\n');
        emit(&msg);
    }
    Ok(())
}
