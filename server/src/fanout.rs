//! Broadcast to rooms and push to users, across cores.
//!
//! **Per-core indexes, questions by message.** Each core indexes only its own connections:
//! room name → member slots, user id → slots. There is no global map and no lock. A message
//! for a room or a user is handed to every other core *once* (an `Arc` of the frame,
//! encoded once; no copy per recipient) through their inboxes, and each core fans it out to
//! its own members. When the sender needs a count (`POST /push/ID`, `POST /broadcast/NAME`),
//! the receiving cores answer with `Delivered` and the asking core replies to the HTTP client
//! once every core has answered. The alternative, a shared user→core map, would put a
//! lock or a concurrent map on every connect and disconnect, and would still need a message
//! to the owning core to deliver; asking all cores costs one channel message per core per
//! push, which is cheap at the core counts this runs on.

use std::collections::HashMap;
use std::sync::Arc;

use ws_common::frame::{self, op};
use ws_common::handshake;

use crate::conn::{flag, Phase};
use crate::core::Core;
use crate::inbox::{CoreMsg, ReplyTo, Target};

#[derive(Debug, Default)]
struct Room {
    members: Vec<u32>,
}

/// A connection's memberships (only connections that have any are in the map).
#[derive(Debug, Default, Clone)]
struct Membership {
    /// Room number and position in its member list.
    room: Option<(u32, u32)>,
    /// User id and position in its connection list (so leaving is O(1), not a scan of
    /// every connection of that user).
    user: Option<(Arc<str>, u32)>,
}

/// This core's rooms and users.
#[derive(Debug, Default)]
pub struct Registry {
    room_ids: HashMap<Arc<str>, u32>,
    room_names: Vec<Arc<str>>,
    rooms: Vec<Room>,
    users: HashMap<Arc<str>, Vec<u32>>,
    member: HashMap<u32, Membership>,
    /// Room numbers whose room emptied, for reuse: clients choose room names, so rooms
    /// must not accumulate.
    free_rooms: Vec<u32>,
}

/// What kind of HTTP request waits for the other cores' counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Push,
    Broadcast,
}

/// An HTTP request waiting for the other cores' delivery counts.
#[derive(Debug)]
pub struct Pending {
    slot: u32,
    gen: u32,
    ask: Ask,
    waiting: usize,
    count: u64,
}

impl Registry {
    pub fn join_room(&mut self, slot: u32, name: &str) {
        let id = match self.room_ids.get(name) {
            Some(id) => *id,
            None => {
                let name: Arc<str> = Arc::from(name);
                let id = match self.free_rooms.pop() {
                    Some(id) => {
                        self.room_names[id as usize] = name.clone();
                        id
                    }
                    None => {
                        self.room_names.push(name.clone());
                        self.rooms.push(Room::default());
                        (self.rooms.len() - 1) as u32
                    }
                };
                self.room_ids.insert(name, id);
                id
            }
        };
        let members = &mut self.rooms[id as usize].members;
        members.push(slot);
        self.member.entry(slot).or_default().room = Some((id, (members.len() - 1) as u32));
    }

    pub fn join_user(&mut self, slot: u32, user: &str) {
        let key: Arc<str> = match self.users.get_key_value(user) {
            Some((k, _)) => k.clone(),
            None => Arc::from(user),
        };
        let list = self.users.entry(key.clone()).or_default();
        list.push(slot);
        let pos = (list.len() - 1) as u32;
        self.member.entry(slot).or_default().user = Some((key, pos));
    }

    /// Forgets a closed connection.
    pub fn leave(&mut self, slot: u32) {
        let Some(m) = self.member.remove(&slot) else {
            return;
        };
        if let Some((room, pos)) = m.room {
            let members = &mut self.rooms[room as usize].members;
            members.swap_remove(pos as usize);
            if let Some(&moved) = members.get(pos as usize) {
                if let Some(mm) = self.member.get_mut(&moved) {
                    mm.room = Some((room, pos));
                }
            }
            if members.is_empty() {
                members.shrink_to_fit();
                let name = std::mem::replace(&mut self.room_names[room as usize], Arc::from(""));
                self.room_ids.remove(&name);
                self.free_rooms.push(room);
            }
        }
        if let Some((user, pos)) = m.user {
            if let Some(list) = self.users.get_mut(&user) {
                if list.get(pos as usize) == Some(&slot) {
                    list.swap_remove(pos as usize);
                    if let Some(&moved) = list.get(pos as usize) {
                        if let Some((_, p)) =
                            self.member.get_mut(&moved).and_then(|mm| mm.user.as_mut())
                        {
                            *p = pos;
                        }
                    }
                }
                if list.is_empty() {
                    self.users.remove(&user);
                }
            }
        }
    }

    /// The room a connection is in.
    pub fn room_of(&self, slot: u32) -> Option<Arc<str>> {
        let (room, _) = self.member.get(&slot)?.room?;
        self.room_names.get(room as usize).cloned()
    }

    /// Copies the slots of `target`'s local members into `out`.
    fn targets(&self, target: &Target, out: &mut Vec<u32>) {
        out.clear();
        match target {
            Target::Room(name) => {
                if let Some(id) = self.room_ids.get(name) {
                    out.extend_from_slice(&self.rooms[*id as usize].members);
                }
            }
            Target::User(u) => {
                if let Some(list) = self.users.get(u) {
                    out.extend_from_slice(list);
                }
            }
        }
    }
}

/// Above this many bytes a recipient's frames are not concatenated but sent as iovecs.
pub const COALESCE_MAX: usize = 64 * 1024;

/// The concatenated frames of the last recipient written, keyed by their frame indices.
#[derive(Debug, Default)]
pub struct Coalesced {
    key: Vec<u32>,
    bytes: Vec<u8>,
}

impl Coalesced {
    fn holds(&self, entries: &[(u32, u32, u32)]) -> bool {
        self.key.len() == entries.len() && self.key.iter().zip(entries).all(|(k, e)| *k == e.2)
    }
}

/// One `sendmsg` of a batch too big to concatenate: an iovec per frame (up to 64; what is
/// left is queued by the caller like any unsent rest).
fn send_iovecs(fd: i32, entries: &[(u32, u32, u32)], frames: &[Arc<[u8]>]) -> Result<usize, i32> {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 64];
    let n = entries.len().min(iov.len());
    for (v, e) in iov.iter_mut().zip(&entries[..n]) {
        let f = &frames[e.2 as usize];
        *v = libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        };
    }
    crate::core::sendmsg_now(fd, &iov[..n])
}

impl Core {
    /// Delivers `frame` to this core's connections of `target` (but `exclude`); returns how
    /// many got it (dropped by the slow-consumer policy does not count).
    ///
    /// Frames are not written here: each recipient's frames of this wake are collected in
    /// `fan_queue` and leave in one send per connection at the end of the wake
    /// ([`Core::flush_fanout`]), so a core that falls behind writes many messages per
    /// syscall instead of one syscall per message per recipient.
    pub(crate) fn deliver_local(
        &mut self,
        target: &Target,
        frame: &Arc<[u8]>,
        exclude: Option<u32>,
    ) -> u64 {
        let mut slots = std::mem::take(&mut self.fan_slots);
        self.registry.targets(target, &mut slots);
        let idx = self.fan_frames.len() as u32;
        let mut queued = false;
        let mut count = 0;
        for &slot in &slots {
            if Some(slot) == exclude {
                continue;
            }
            let Some(conn) = self.conns.by_slot(slot) else {
                continue;
            };
            if conn.phase != Phase::Open {
                continue;
            }
            let gen = conn.gen;
            let behind = conn.extra.as_ref().is_some_and(|e| e.unsent() > 0);
            if behind && !conn.has(flag::FANNED) {
                // Already behind: queue behind what is waiting (slow-consumer policy applies).
                if self.send_bytes(slot, gen, frame) {
                    count += 1;
                }
            } else {
                // With frames already in this wake's queue, later ones join them (order).
                conn.flags |= flag::FANNED;
                self.fan_queue.push((slot, gen, idx));
                queued = true;
                count += 1;
            }
        }
        if queued {
            self.fan_frames.push(frame.clone());
        }
        self.fan_slots = slots;
        self.stats().deliveries.add(count);
        count
    }

    /// Writes the frames collected by `deliver_local`: one send per connection, and the
    /// sends of all connections submitted together through the core's [`SendRing`] (one
    /// `io_uring_enter` for a room instead of a `send()` each). Several frames for a
    /// connection go out as one contiguous buffer, built once and reused for every following
    /// recipient of the same frames (the members of a room), so the kernel copies one
    /// segment per recipient instead of one iovec per frame; a batch above [`COALESCE_MAX`]
    /// goes out at once as iovecs of the shared frames instead.
    ///
    /// [`SendRing`]: crate::ring::SendRing
    pub(crate) fn flush_fanout(&mut self) {
        if self.fan_queue.is_empty() {
            return;
        }
        let mut queue = std::mem::take(&mut self.fan_queue);
        let mut frames = std::mem::take(&mut self.fan_frames);
        let mut co = std::mem::take(&mut self.fan_coalesced);
        let mut batch = std::mem::take(&mut self.fan_batch);
        // (slot, frame index) is unique, and frame indices follow delivery order: sorting on
        // both keeps each connection's frames in order without a stable sort.
        queue.sort_unstable_by_key(|&(slot, _, i)| (u64::from(slot) << 32) | u64::from(i));
        let mut start = 0;
        while start < queue.len() {
            let (slot, gen, _) = queue[start];
            let end = start
                + queue[start..]
                    .iter()
                    .take_while(|(s, g, _)| *s == slot && *g == gen)
                    .count();
            self.queue_frames(
                slot,
                gen,
                (start, end),
                &queue,
                &frames,
                &mut co,
                &mut batch,
            );
            start = end;
        }
        self.finish_sends(&queue, &frames, &mut batch);
        queue.clear();
        frames.clear();
        co.key.clear();
        self.fan_queue = queue;
        self.fan_frames = frames;
        self.fan_coalesced = co;
        self.fan_batch = batch;
    }

    /// Queues one connection's frames on the send ring (or writes them at once when they
    /// must wait behind its queue or are too many to concatenate).
    #[allow(clippy::too_many_arguments)]
    fn queue_frames(
        &mut self,
        slot: u32,
        gen: u32,
        (start, end): (usize, usize),
        queue: &[(u32, u32, u32)],
        frames: &[Arc<[u8]>],
        co: &mut Coalesced,
        batch: &mut Vec<(u32, u32, usize, usize)>,
    ) {
        let entries = &queue[start..end];
        let Some(conn) = self.conns.get(slot, gen) else {
            return;
        };
        conn.flags &= !flag::FANNED;
        if conn.phase != Phase::Open || conn.has(flag::CLOSE_SENT) {
            return; // closed or closing since: nothing may follow a Close frame
        }
        let fd = conn.fd;
        let tls = conn.has(flag::TLS);
        let frame = |k: usize| &frames[entries[k].2 as usize];
        if conn.extra.as_ref().is_some_and(|e| e.unsent() > 0) {
            self.send_each(slot, gen, (0..entries.len()).map(|k| &frame(k)[..]));
            return;
        }
        if tls {
            // Sealed for this connection alone (its own keys and sequence numbers): the
            // shared frames are joined and sealed as one run of records, sent at once.
            self.send_tls_joined(slot, gen, (0..entries.len()).map(|k| &frame(k)[..]));
            return;
        }
        let total: usize = (0..entries.len()).map(|k| frame(k).len()).sum();
        if entries.len() > 1 && total > COALESCE_MAX {
            let sent = send_iovecs(fd, entries, frames);
            self.after_send(slot, gen, entries, frames, sent);
            return;
        }
        let bytes: &[u8] = if entries.len() == 1 {
            frame(0)
        } else {
            if !co.holds(entries) {
                // Sends queued from the old buffer must complete before it is rewritten.
                self.finish_sends(queue, frames, batch);
                co.key.clear();
                co.key.extend(entries.iter().map(|e| e.2));
                co.bytes.clear();
                for k in 0..entries.len() {
                    co.bytes.extend_from_slice(frame(k));
                }
            }
            &co.bytes
        };
        // SAFETY: the bytes are a frame of `frames` or `co.bytes`; both outlive finish_sends,
        // which runs before `frames` is cleared and before `co` is rewritten.
        let tag = batch.len() as u64;
        if unsafe { self.send_ring.push(fd, bytes.as_ptr(), bytes.len(), tag) } {
            batch.push((slot, gen, start, end));
            return;
        }
        // The ring is full: finish what it holds, and send this one directly.
        self.finish_sends(queue, frames, batch);
        let sent = crate::core::send_now(fd, bytes);
        self.after_send(slot, gen, entries, frames, sent);
    }

    /// Submits the queued sends, waits for all of them, and queues what each socket did not
    /// take.
    fn finish_sends(
        &mut self,
        queue: &[(u32, u32, u32)],
        frames: &[Arc<[u8]>],
        batch: &mut Vec<(u32, u32, usize, usize)>,
    ) {
        if batch.is_empty() {
            return;
        }
        let mut results = std::mem::take(&mut self.fan_results);
        self.send_ring.complete(&mut results);
        for &(tag, res) in &results {
            let Some(&(slot, gen, start, end)) = batch.get(tag as usize) else {
                continue;
            };
            let sent = if res >= 0 {
                Ok(res as usize)
            } else {
                crate::core::would_block_or(-res)
            };
            self.after_send(slot, gen, &queue[start..end], frames, sent);
        }
        results.clear();
        self.fan_results = results;
        batch.clear();
    }

    /// What follows a connection's send: close it on error, queue the rest if the socket
    /// took only part (a partly sent frame must be completed; the policy limit applies to
    /// what comes after).
    fn after_send(
        &mut self,
        slot: u32,
        gen: u32,
        entries: &[(u32, u32, u32)],
        frames: &[Arc<[u8]>],
        sent: Result<usize, i32>,
    ) {
        let frame = |k: usize| &frames[entries[k].2 as usize];
        let mut n = match sent {
            Ok(n) => n,
            Err(_) => {
                self.stats().resets.inc();
                self.close_now(slot, gen);
                return;
            }
        };
        // Frames the socket took whole, and how much of the next one.
        let mut done = 0;
        while done < entries.len() && n >= frame(done).len() {
            n -= frame(done).len();
            done += 1;
        }
        if done < entries.len() {
            self.enqueue(slot, gen, &frame(done)[n..]);
            self.send_each(slot, gen, (done + 1..entries.len()).map(|k| &frame(k)[..]));
        }
    }

    /// Sends frames one by one through `send_bytes` (the queue and the slow-consumer policy
    /// apply), stopping once the policy has closed the connection: nothing may follow its
    /// Close.
    fn send_each<'a>(&mut self, slot: u32, gen: u32, frames: impl IntoIterator<Item = &'a [u8]>) {
        for f in frames {
            if !self.send_bytes(slot, gen, f)
                && self
                    .conns
                    .get(slot, gen)
                    .is_none_or(|c| c.has(flag::CLOSE_SENT))
            {
                return;
            }
        }
    }

    /// Hands a message to every other core once (batched per core until the end of the wake).
    pub(crate) fn post_to_others(
        &mut self,
        target: &Target,
        frame: &Arc<[u8]>,
        reply: Option<ReplyTo>,
    ) {
        let now = ws_common::payload::now_ns();
        for core in 0..self.outbox.len() {
            if core == self.idx {
                continue;
            }
            self.mailboxes[core].charge(frame.len() as u64);
            self.outbox[core].push(CoreMsg::Deliver {
                target: target.clone(),
                frame: frame.clone(),
                reply,
                sent_ns: now,
            });
            self.stats().cross_core_out.inc();
        }
    }

    /// Sends what `post_to_others` batched: one eventfd write per destination core.
    pub(crate) fn flush_outbox(&mut self) {
        for core in 0..self.outbox.len() {
            if !self.outbox[core].is_empty() {
                let mut batch = std::mem::take(&mut self.outbox[core]);
                self.mailboxes[core].send_all(&mut batch);
                self.outbox[core] = batch;
            }
        }
    }

    /// True while some other core is too far behind on what we posted to it: reading from
    /// publishers pauses (their sockets fill, TCP slows them) until it catches up.
    pub(crate) fn congested(&self) -> bool {
        self.mailboxes
            .iter()
            .enumerate()
            .any(|(i, m)| i != self.idx && m.congested())
    }

    /// True once every other core is back below the low mark (paused publishers resume).
    pub(crate) fn drained(&self) -> bool {
        self.mailboxes
            .iter()
            .enumerate()
            .all(|(i, m)| i == self.idx || m.drained())
    }

    /// Forgets requests whose HTTP client has gone (or whose answers can never all come,
    /// e.g. a core stopped): called by the sweep.
    pub(crate) fn forget_orphan_requests(&mut self) {
        let conns = &mut self.conns;
        self.pending
            .retain(|_, p| conns.get(p.slot, p.gen).is_some());
    }

    /// A data message from a `/broadcast` client: to its room on every core.
    pub(crate) fn broadcast_from(&mut self, slot: u32, frame: Arc<[u8]>, echo: bool) {
        let Some(room) = self.registry.room_of(slot) else {
            return;
        };
        self.stats().broadcasts_in.inc();
        let target = Target::Room(room);
        self.deliver_local(&target, &frame, if echo { None } else { Some(slot) });
        self.post_to_others(&target, &frame, None);
    }

    /// Another core's message for our connections.
    pub(crate) fn on_deliver(
        &mut self,
        target: Target,
        frame: Arc<[u8]>,
        reply: Option<ReplyTo>,
        sent_ns: u64,
    ) {
        self.stats()
            .record_hop(ws_common::payload::now_ns().saturating_sub(sent_ns));
        let count = self.deliver_local(&target, &frame, None);
        if self.inbox.release(frame.len() as u64) {
            self.wake_others = true;
        }
        if let Some(r) = reply {
            if r.core < self.outbox.len() {
                self.outbox[r.core].push(CoreMsg::Delivered {
                    request: r.request,
                    count,
                });
            }
        }
    }

    /// `POST /push/ID` or `POST /broadcast/NAME` with its body: deliver here, ask the others.
    pub(crate) fn start_ask(&mut self, slot: u32, gen: u32, ask: Ask, target: Target, body: &[u8]) {
        let frame: Arc<[u8]> = Arc::from(frame::encode(op::BINARY, body));
        if ask == Ask::Broadcast {
            self.stats().broadcasts_in.inc();
        }
        let local = self.deliver_local(&target, &frame, None);
        let others = self.outbox.len() - 1;
        if let Some(conn) = self.conns.get(slot, gen) {
            conn.phase = Phase::Waiting;
        }
        if others == 0 {
            self.answer_ask(slot, gen, ask, local);
            return;
        }
        self.next_request += 1;
        let request = self.next_request;
        self.pending.insert(
            request,
            Pending {
                slot,
                gen,
                ask,
                waiting: others,
                count: local,
            },
        );
        self.post_to_others(
            &target,
            &frame,
            Some(ReplyTo {
                core: self.idx,
                request,
            }),
        );
    }

    pub(crate) fn on_delivered(&mut self, request: u64, count: u64) {
        let Some(p) = self.pending.get_mut(&request) else {
            return;
        };
        p.count += count;
        p.waiting -= 1;
        if p.waiting == 0 {
            if let Some(p) = self.pending.remove(&request) {
                self.answer_ask(p.slot, p.gen, p.ask, p.count);
            }
        }
    }

    fn answer_ask(&mut self, slot: u32, gen: u32, ask: Ask, count: u64) {
        let body = format!("{count}\n");
        let resp = if ask == Ask::Push && count == 0 {
            self.stats().push_misses.inc();
            handshake::http_response(404, "", "text/plain", body.as_bytes())
        } else {
            if ask == Ask::Push {
                self.stats().push_hits.inc();
            }
            handshake::http_response(200, "", "text/plain", body.as_bytes())
        };
        if self.conns.get(slot, gen).is_some() {
            self.send_bytes(slot, gen, &resp);
            self.linger(slot, gen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_freed_and_reused_when_empty() {
        let mut r = Registry::default();
        // Clients choose room names: a thousand one-off rooms must not accumulate.
        for i in 0..1000u32 {
            r.join_room(i, &format!("room-{i}"));
            r.join_user(i, "u");
            r.leave(i);
        }
        assert!(r.rooms.len() <= 1, "{} rooms kept", r.rooms.len());
        assert!(r.room_ids.is_empty() && r.users.is_empty() && r.member.is_empty());
        // Membership positions stay right across swap_remove.
        for i in 0..5 {
            r.join_room(i, "x");
        }
        r.leave(1);
        let mut out = Vec::new();
        r.targets(&Target::Room(Arc::from("x")), &mut out);
        out.sort_unstable();
        assert_eq!(out, vec![0, 2, 3, 4]);
        r.leave(4);
        r.leave(0);
        r.targets(&Target::Room(Arc::from("x")), &mut out);
        out.sort_unstable();
        assert_eq!(out, vec![2, 3]);
        assert_eq!(r.room_of(3).as_deref(), Some("x"));
    }

    #[test]
    fn a_user_with_many_connections_leaves_in_any_order() {
        let mut r = Registry::default();
        for i in 0..6 {
            r.join_user(i, "alice");
        }
        let left = |r: &Registry| {
            let mut out = Vec::new();
            r.targets(&Target::User(Arc::from("alice")), &mut out);
            out.sort_unstable();
            out
        };
        r.leave(0);
        r.leave(3);
        assert_eq!(left(&r), vec![1, 2, 4, 5]);
        r.leave(5);
        r.leave(1);
        assert_eq!(left(&r), vec![2, 4]);
        r.leave(2);
        r.leave(4);
        assert!(r.users.is_empty() && r.member.is_empty());
    }
}
