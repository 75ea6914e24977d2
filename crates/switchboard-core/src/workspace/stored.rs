//! A workspace as a snapshot stores it (format 4), and the reader of format 3.
//!
//! Format 4 writes the workspace's fields in order, like a derived implementation would, but
//! frames its two largest collections — contacts and conversations, about 90 % of a large
//! snapshot — as byte strings of their own. A restore finds both at once and decodes them on
//! two threads; each map is still decoded in its stored order, so the restored state is the
//! same whichever thread finishes first. Format 3 wrote the two maps inline; [`WorkspaceFields`]
//! reads it, so a node upgraded with format-3 snapshots on disk still starts.

use super::Workspace;
use crate::dedupe::Dedupe;
use crate::digest::DigestMap;
use crate::entities::{Agent, Contact, Conversation, Team};
use crate::ids::{AgentId, ContactId, ConversationId, TeamId, WorkspaceId};
use crate::model::{RoutingRule, WorkspaceSettings};
use crate::rng::SplitMix64;
use serde::de::Visitor;
use serde::ser::{Error as _, SerializeStruct, SerializeTuple};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Encoded bytes of contacts and conversations below which a workspace is decoded on one
/// thread (starting one costs more than decoding a few thousand records).
const PARALLEL_DECODE_BYTES_MIN: usize = 1 << 20;

/// A value written as postcard writes a byte string holding its encoding — the length as a
/// varint, then the bytes — without building that encoding apart first (for a million
/// conversations, 160 MB more to allocate and copy): a first pass only counts the bytes, then
/// the length and the value are written in place. The reader takes the pair as one byte
/// string ([`Blob`]). Snapshots are postcard only, and
/// `tests::a_framed_value_is_written_as_a_byte_string_of_its_encoding` pins the equivalence.
struct Framed<'a, T>(&'a T);

impl<T: Serialize> Serialize for Framed<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let length =
            postcard::serialize_with_flavor::<T, postcard::ser_flavors::Size, usize>(self.0, Default::default())
                .map_err(S::Error::custom)?;
        let mut pair = serializer.serialize_tuple(2)?;
        pair.serialize_element(&u64::try_from(length).map_err(S::Error::custom)?)?;
        pair.serialize_element(self.0)?;
        pair.end()
    }
}

impl Serialize for Workspace {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Every field, so that a new one cannot be left out of snapshots unnoticed; the skipped
        // ones are indexes rebuilt from the others.
        let Workspace {
            id,
            settings,
            rng,
            next_seq,
            agents,
            teams,
            rules,
            contacts,
            conversations,
            dedupe,
            compiled_rules: _,
            moved_queues: _,
        } = self;
        let mut fields = serializer.serialize_struct("Workspace", 10)?;
        fields.serialize_field("id", id)?;
        fields.serialize_field("settings", settings)?;
        fields.serialize_field("rng", rng)?;
        fields.serialize_field("next_seq", next_seq)?;
        fields.serialize_field("agents", agents)?;
        fields.serialize_field("teams", teams)?;
        fields.serialize_field("rules", rules)?;
        fields.serialize_field("contacts", &Framed(contacts))?;
        fields.serialize_field("conversations", &Framed(conversations))?;
        fields.serialize_field("dedupe", dedupe)?;
        fields.end()
    }
}

/// A byte string as the deserializer hands it: borrowed from the input where it can.
pub(crate) enum Blob<'de> {
    Borrowed(&'de [u8]),
    Owned(Vec<u8>),
}

impl Blob<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Blob::Borrowed(bytes) => bytes,
            Blob::Owned(bytes) => bytes,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Blob<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BlobVisitor<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for BlobVisitor<'a> {
            type Value = Blob<'a>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a byte string")
            }

            fn visit_borrowed_bytes<E: serde::de::Error>(self, bytes: &'de [u8]) -> Result<Blob<'a>, E> {
                Ok(Blob::Borrowed(bytes))
            }

            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Blob<'a>, E> {
                Ok(Blob::Owned(bytes.to_vec()))
            }

            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Blob<'a>, E> {
                Ok(Blob::Owned(bytes))
            }
        }

        deserializer.deserialize_bytes(BlobVisitor(std::marker::PhantomData))
    }
}

/// A workspace as format 4 stores it, its contacts and conversations still encoded: what
/// `State::restore` reads before [`StoredWorkspace::decode`] decodes those two (outside serde,
/// so that what went wrong reaches the operator: postcard keeps no custom error text).
pub(crate) type StoredWorkspace<'a> = WorkspaceFields<Blob<'a>, Blob<'a>>;

impl StoredWorkspace<'_> {
    /// The workspace, its contacts and conversations decoded (on two threads when large).
    pub(crate) fn decode(self) -> Result<Workspace, String> {
        let WorkspaceFields { id, settings, rng, next_seq, agents, teams, rules, contacts, conversations, dedupe } =
            self;
        let (contacts, conversations) = decode_people(contacts.bytes(), conversations.bytes())
            .map_err(|error| format!("workspace {id}: {error}"))?;
        let fields =
            WorkspaceFields { id, settings, rng, next_seq, agents, teams, rules, contacts, conversations, dedupe };
        Ok(Workspace::from(fields))
    }
}

type People = (DigestMap<ContactId, Contact>, DigestMap<ConversationId, Conversation>);

/// Decodes the contacts and the conversations, on two threads when there are enough of them
/// (on one if the second thread cannot be started).
fn decode_people(contacts: &[u8], conversations: &[u8]) -> Result<People, String> {
    if contacts.len().saturating_add(conversations.len()) >= PARALLEL_DECODE_BYTES_MIN {
        let decoded = std::thread::scope(|scope| {
            let helper = std::thread::Builder::new()
                .name("restore-contacts".to_owned())
                .spawn_scoped(scope, || decode_map("contacts", contacts));
            let helper = helper.ok()?;
            let conversations = decode_map("conversations", conversations);
            let contacts = helper.join().unwrap_or_else(|_| Err("decoding the contacts failed".to_owned()));
            Some((contacts, conversations))
        });
        if let Some((contacts, conversations)) = decoded {
            return Ok((contacts?, conversations?));
        }
    }
    Ok((decode_map("contacts", contacts)?, decode_map("conversations", conversations)?))
}

/// One map, which must take up all of `bytes`.
fn decode_map<'de, K, V>(what: &str, bytes: &'de [u8]) -> Result<DigestMap<K, V>, String>
where
    DigestMap<K, V>: Deserialize<'de>,
{
    let (map, rest) = postcard::take_from_bytes(bytes).map_err(|error| format!("its {what} do not decode: {error}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes follow its {what}", rest.len()));
    }
    Ok(map)
}

/// A workspace's stored fields, its contacts and conversations as `C` and `V`: decoded maps
/// (format 3, which wrote every map inline, reads as derived) or still-encoded [`Blob`]s
/// (format 4, [`StoredWorkspace`]).
#[derive(Deserialize)]
pub(crate) struct WorkspaceFields<C = DigestMap<ContactId, Contact>, V = DigestMap<ConversationId, Conversation>> {
    id: WorkspaceId,
    settings: WorkspaceSettings,
    rng: SplitMix64,
    next_seq: u64,
    agents: DigestMap<AgentId, Agent>,
    teams: DigestMap<TeamId, Team>,
    rules: Vec<RoutingRule>,
    contacts: C,
    conversations: V,
    dedupe: Dedupe,
}

impl From<WorkspaceFields> for Workspace {
    fn from(stored: WorkspaceFields) -> Self {
        let WorkspaceFields { id, settings, rng, next_seq, agents, teams, rules, contacts, conversations, dedupe } =
            stored;
        Workspace {
            id,
            settings,
            rng,
            next_seq,
            agents,
            teams,
            rules,
            contacts,
            conversations,
            dedupe,
            compiled_rules: Vec::new(),
            moved_queues: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_value_is_written_as_a_byte_string_of_its_encoding() {
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(self.0)
            }
        }
        // Lengths whose varints take one, two and three bytes.
        for count in [3usize, 40, 5_000] {
            let value: Vec<(String, u64)> = (0..count).map(|i| (format!("key-{i}"), i as u64 * 977)).collect();
            let encoding = postcard::to_allocvec(&value).expect("encodes");
            let framed = postcard::to_allocvec(&Framed(&value)).expect("encodes");
            assert_eq!(framed, postcard::to_allocvec(&Bytes(&encoding)).expect("encodes"), "{count} entries");
            let blob: Blob<'_> = postcard::from_bytes(&framed).expect("decodes as a byte string");
            assert_eq!(blob.bytes(), encoding.as_slice());
        }
    }

    #[test]
    fn a_map_that_does_not_decode_is_named_on_either_thread() {
        let empty = [0u8];
        let trailing = [0u8, 7];
        let error = decode_people(&empty, &trailing).expect_err("trailing bytes are refused");
        assert_eq!(error, "1 bytes follow its conversations");
        // Says three entries, holds none.
        let error = decode_people(&[3u8], &empty).expect_err("a short map is refused");
        assert!(error.starts_with("its contacts do not decode: "), "{error}");
        // Large enough for two threads: a varint that never ends, decoded on the helper.
        let garbage = vec![0xffu8; PARALLEL_DECODE_BYTES_MIN];
        let error = decode_people(&garbage, &empty).expect_err("garbage is refused");
        assert!(error.starts_with("its contacts do not decode: "), "{error}");
        let error = decode_people(&empty, &garbage).expect_err("garbage is refused");
        assert!(error.starts_with("its conversations do not decode: "), "{error}");
    }
}
