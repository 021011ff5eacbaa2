//! The requests a session keeps track of, so that each gets exactly one answer: the client's
//! (in flight to the server, or held for a replacement), the server's to the client, and the
//! relay's own (probes, replayed setup).

use crate::client::{ClientSide, Route};
use crate::message::{self, RawId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Every request the session keeps track of: the client's, waiting for the server (in
/// flight) or for a replacement (held); the server's, waiting for the client; the relay's own.
#[derive(Debug)]
pub(crate) struct Requests {
    /// Client requests handed to the current server and not answered yet.
    in_flight: InFlight,
    /// Client messages waiting for a replacement server, and the request ids among them.
    held: Vec<u8>,
    held_ids: Vec<RawId>,
    /// The batch each waiting request came in (by order of arrival), so that the relay's own
    /// answers to a batch are a batch too.
    batch_of: BTreeMap<RawId, u64>,
    next_batch: u64,
    /// Requests from the server to the client not answered yet, oldest first.
    from_server: VecDeque<RawId>,
    /// Responses the relay swallows: its own pings and replayed requests.
    own: BTreeSet<RawId>,
    next_own: u64,
}

impl Requests {
    pub(crate) fn new() -> Self {
        Requests {
            in_flight: InFlight::default(),
            held: Vec::new(),
            held_ids: Vec::new(),
            batch_of: BTreeMap::new(),
            next_batch: 1,
            from_server: VecDeque::new(),
            own: BTreeSet::new(),
            next_own: 1,
        }
    }

    /// Client requests waiting for an answer, in flight or held.
    pub(crate) fn waiting(&self) -> usize {
        self.in_flight.len() + self.held_ids.len()
    }

    /// The one client request in flight, if exactly one is.
    pub(crate) fn only_in_flight(&self) -> Option<RawId> {
        (self.in_flight.len() == 1)
            .then(|| self.in_flight.ids.keys().next().cloned())
            .flatten()
    }

    /// No client request waits for the server.
    pub(crate) fn none_in_flight(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Bytes of client messages held for a replacement.
    pub(crate) fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Names the batch a client message came in.
    pub(crate) fn new_batch(&mut self) -> u64 {
        self.next_batch += 1;
        self.next_batch
    }

    /// A client request goes to the server now, or waits for a replacement (`holding`).
    pub(crate) fn add(&mut self, id: RawId, batch: Option<u64>, holding: bool) {
        if let Some(batch) = batch {
            self.batch_of.insert(id.clone(), batch);
        }
        if holding {
            self.held_ids.push(id);
        } else {
            self.in_flight.insert(id);
        }
    }

    /// Keeps a client message (a line) for a replacement.
    pub(crate) fn hold(&mut self, line: &[u8]) {
        self.held.extend_from_slice(line);
        self.held.push(b'\n');
    }

    /// A message that never reached a server that ended: it waits for the replacement (a
    /// request leaves the in-flight table for the held ones).
    pub(crate) fn rehold(&mut self, id: Option<&RawId>, line: &[u8]) {
        if let Some(id) = id {
            if self.in_flight.remove(id) {
                self.held_ids.push(id.clone());
            }
        }
        self.hold(line);
    }

    /// The client cancelled a request held for a replacement: it no longer waits (its line
    /// still goes, the cancellation after it). False if it was not held.
    pub(crate) fn unhold(&mut self, id: &RawId) -> bool {
        let Some(at) = self.held_ids.iter().position(|h| h == id) else {
            return false;
        };
        self.held_ids.remove(at);
        self.batch_of.remove(id);
        true
    }

    /// The request is held for a replacement.
    pub(crate) fn is_held(&self, id: &RawId) -> bool {
        self.held_ids.contains(id)
    }

    /// The replacement is ready: what was held goes to it, and its requests are in flight.
    pub(crate) fn release_held(&mut self) -> Vec<u8> {
        for id in self.held_ids.drain(..) {
            self.in_flight.insert(id);
        }
        std::mem::take(&mut self.held)
    }

    /// No server will take what is held: its requests, to be answered by the relay.
    pub(crate) fn drop_held(&mut self) -> Vec<RawId> {
        self.held = Vec::new();
        std::mem::take(&mut self.held_ids)
    }

    /// Every request in flight, to be answered by the relay.
    pub(crate) fn take_in_flight(&mut self) -> Vec<RawId> {
        std::mem::take(&mut self.in_flight).drain().collect()
    }

    /// The request waits for an answer (in flight or held).
    pub(crate) fn is_waiting(&self, id: &RawId) -> bool {
        self.in_flight.contains(id) || self.held_ids.contains(id)
    }

    /// The request is in flight at the server (not held for a replacement).
    pub(crate) fn is_in_flight(&self, id: &RawId) -> bool {
        self.in_flight.contains(id)
    }

    /// One request is answered: it no longer waits. False if it was not waiting.
    pub(crate) fn answered(&mut self, id: &RawId) -> bool {
        let waited = self.in_flight.remove(id);
        if waited && !self.in_flight.contains(id) {
            self.batch_of.remove(id);
        }
        waited
    }

    /// An id for a request of the relay's own (`kind`: probe, init, replay), unlike any the
    /// client has waiting; its response will be swallowed.
    pub(crate) fn own_id(&mut self, kind: &str) -> RawId {
        let n = self.next_own;
        self.next_own += 1;
        // A string no client is likely to use; ids in flight are also checked.
        let mut text = format!("mcp-relay:{kind}:{n}");
        let mut id = RawId::string(&text);
        while self.in_flight.contains(&id) || self.held_ids.contains(&id) {
            text.insert(0, '_');
            id = RawId::string(&text);
        }
        self.own.insert(id.clone());
        id
    }

    /// A response the relay asked for itself (and no longer waits for).
    pub(crate) fn is_own(&mut self, id: &RawId) -> bool {
        self.own.remove(id)
    }

    /// The server asked the client something; only the newest `max` are remembered.
    pub(crate) fn server_asked(&mut self, id: RawId, max: usize) {
        if self.from_server.len() >= max {
            self.from_server.pop_front();
        }
        self.from_server.push_back(id);
    }

    /// The client answered the server's request `id`; false if the server was not waiting.
    pub(crate) fn client_answered(&mut self, id: &RawId) -> bool {
        match self.from_server.iter().position(|r| r == id) {
            Some(at) => self.from_server.remove(at).is_some(),
            None => false,
        }
    }

    /// The server is gone: its requests and the relay's to it will not be answered.
    pub(crate) fn forget_server(&mut self) {
        self.from_server.clear();
        self.own.clear();
    }

    /// Answers each request with an error made by the relay; requests that came in one batch
    /// get one batch back on TCP (over HTTP each answer goes to its request's stream).
    pub(crate) fn answer_all(
        &mut self,
        ids: Vec<RawId>,
        code: i64,
        message: &str,
        client: &mut ClientSide,
    ) {
        let mut batches: BTreeMap<u64, Vec<RawId>> = BTreeMap::new();
        for id in ids {
            match self.batch_of.remove(&id) {
                Some(b) if matches!(client, ClientSide::Tcp(_)) => {
                    batches.entry(b).or_default().push(id)
                }
                _ => client.error(Some(&id), code, message),
            }
        }
        for ids in batches.into_values() {
            let mut body = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                body.push(if i == 0 { b'[' } else { b',' });
                message::write_error(&mut body, Some(id.as_str()), code, message);
            }
            body.push(b']');
            client.send(
                Route::FromServer {
                    progress_token: None,
                },
                &body,
            );
        }
    }
}

/// Client request ids waiting for an answer. A multiset: a client that (wrongly) reuses an
/// id while it is in flight still gets one answer per request.
#[derive(Debug, Default)]
struct InFlight {
    ids: BTreeMap<RawId, u32>,
    len: usize,
}

impl InFlight {
    fn insert(&mut self, id: RawId) {
        *self.ids.entry(id).or_default() += 1;
        self.len += 1;
    }

    /// Removes one occurrence; false if the id was not waiting.
    fn remove(&mut self, id: &RawId) -> bool {
        let Some(n) = self.ids.get_mut(id) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            self.ids.remove(id);
        }
        self.len -= 1;
        true
    }

    fn contains(&self, id: &RawId) -> bool {
        self.ids.contains_key(id)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every waiting request, one entry per occurrence, in id order.
    fn drain(self) -> impl Iterator<Item = RawId> {
        self.ids
            .into_iter()
            .flat_map(|(id, n)| std::iter::repeat_n(id, n as usize))
    }
}
