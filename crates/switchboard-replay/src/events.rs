//! The recorded events a replay reads: one JSON object per line, as `switchboard
//! export-events` writes them.
//!
//! ```text
//! {"at_ms":1795428000000,"sequence":1,"event":{"workspace":"acme","event_id":"e-1","command":{"OpenConversation":{...}}}}
//! ```
//!
//! `at_ms` is when the event was recorded (the `SWITCHBOARD` stream's timestamp, UTC
//! milliseconds): the replay's clock. `sequence` is its stream sequence (informational). `event`
//! is the core's [`Event`], so a file may also carry commands no gateway sends, such as
//! `SetAgentStatus` for agents' shifts.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use switchboard_core::Event;

/// Longest line of an events file, in bytes.
pub const EVENT_LINE_BYTES_MAX: usize = 256 * 1024;
/// Most events one replay reads.
pub const REPLAY_EVENTS_MAX: usize = 20_000_000;
/// Earliest accepted `at_ms` (1970-01-01).
pub const AT_MS_MIN: i64 = 0;
/// Latest accepted `at_ms` (9999-12-31T23:59:59.999Z).
pub const AT_MS_MAX: i64 = 253_402_300_799_999;

/// One recorded event and when it was recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recorded {
    /// When it was recorded (UTC milliseconds): the replay applies it at this time.
    pub at_ms: i64,
    /// Its position in the stream it came from (0 when unknown).
    #[serde(default)]
    pub sequence: u64,
    /// The event.
    pub event: Event,
}

/// Why an events file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("events line {line}: {source}")]
    Io {
        /// One-based line number.
        line: usize,
        /// The IO error.
        source: std::io::Error,
    },
    /// A line is longer than [`EVENT_LINE_BYTES_MAX`].
    #[error("events line {line}: longer than event_line_bytes_max ({max} bytes)")]
    LineTooLong {
        /// One-based line number.
        line: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`REPLAY_EVENTS_MAX`] events.
    #[error("more than replay_events_max ({max}) events")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// A line is not a recorded event.
    #[error("events line {line}: {reason}")]
    Invalid {
        /// One-based line number.
        line: usize,
        /// What is wrong, naming the field.
        reason: String,
    },
}

/// Checks one recorded event's time.
pub fn check_at_ms(at_ms: i64) -> Result<(), String> {
    if (AT_MS_MIN..=AT_MS_MAX).contains(&at_ms) {
        Ok(())
    } else {
        Err(format!("at_ms: {at_ms} is outside {AT_MS_MIN}..={AT_MS_MAX} (UTC milliseconds)"))
    }
}

/// Reads an events file: one [`Recorded`] per line; blank lines are skipped. Each line is
/// bounded ([`EVENT_LINE_BYTES_MAX`]), so is the count ([`REPLAY_EVENTS_MAX`]); an invalid line
/// is an error naming its number and field. Commands are validated by the core when applied.
pub fn read(reader: impl BufRead) -> Result<Vec<Recorded>, ReadError> {
    let mut events = Vec::new();
    let mut reader = reader;
    let mut buffer = Vec::new();
    let mut line = 0usize;
    loop {
        buffer.clear();
        line = line.saturating_add(1);
        // Read at most one byte past the limit so that an endless line cannot exhaust memory.
        let limit = u64::try_from(EVENT_LINE_BYTES_MAX).unwrap_or(u64::MAX).saturating_add(2);
        let read = std::io::Read::take(&mut reader, limit)
            .read_until(b'\n', &mut buffer)
            .map_err(|source| ReadError::Io { line, source })?;
        if read == 0 {
            return Ok(events);
        }
        let text = buffer.strip_suffix(b"\n").unwrap_or(&buffer);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.len() > EVENT_LINE_BYTES_MAX {
            return Err(ReadError::LineTooLong { line, max: EVENT_LINE_BYTES_MAX });
        }
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let recorded: Recorded =
            serde_json::from_slice(text).map_err(|error| ReadError::Invalid { line, reason: error.to_string() })?;
        check_at_ms(recorded.at_ms).map_err(|reason| ReadError::Invalid { line, reason })?;
        if events.len() >= REPLAY_EVENTS_MAX {
            return Err(ReadError::TooMany { max: REPLAY_EVENTS_MAX });
        }
        events.push(recorded);
    }
}

/// Writes one recorded event as a line of an events file.
pub fn write(writer: &mut impl Write, recorded: &Recorded) -> std::io::Result<()> {
    serde_json::to_writer(&mut *writer, recorded)?;
    writer.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::{Channel, Command, OpenConversation, WorkspaceId};

    fn open(at_ms: i64) -> Recorded {
        let command = Command::OpenConversation(OpenConversation::new("c1", "+1", Channel::WhatsApp));
        Recorded { at_ms, sequence: 7, event: Event { workspace: WorkspaceId::new("acme"), event_id: None, command } }
    }

    #[test]
    fn a_written_file_reads_back() {
        let mut file = Vec::new();
        write(&mut file, &open(1_000)).expect("valid");
        file.extend_from_slice(b"\n  \n");
        write(&mut file, &open(2_000)).expect("valid");
        assert_eq!(read(&file[..]).expect("valid"), vec![open(1_000), open(2_000)]);
    }

    #[test]
    fn bad_lines_are_refused_with_their_number_and_field() {
        let mut file = Vec::new();
        write(&mut file, &open(1_000)).expect("valid");
        write(&mut file, &open(-5)).expect("valid");
        let error = read(&file[..]).expect_err("refused").to_string();
        assert!(error.starts_with("events line 2: at_ms: -5"), "{error}");

        let error = read(&b"{\"at_ms\": 1}\n"[..]).expect_err("refused").to_string();
        assert!(error.contains("line 1") && error.contains("event"), "{error}");

        let long = vec![b' '; EVENT_LINE_BYTES_MAX + 10];
        let error = read(&long[..]).expect_err("refused").to_string();
        assert!(error.contains("event_line_bytes_max"), "{error}");
    }
}
