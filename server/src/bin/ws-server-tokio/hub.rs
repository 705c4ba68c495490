//! Broadcast rooms and push-by-user: a registry of per-connection mailboxes.
//!
//! A connection that can receive messages from elsewhere (any `/broadcast` connection, and
//! any connection that presented `?user=ID`) owns a [`Mailbox`]: a queue whose *bytes* are
//! bounded by an atomic budget (`--send-queue-bytes`), checked by the publisher before it
//! queues. A full mailbox never blocks the publisher: per
//! `--slow-consumer`, the connection is told to close with 1008, or the message is dropped
//! for it alone. So one slow connection delays nobody, and memory stays bounded.
//!
//! Messages are tungstenite `Message`s whose payload is a `Bytes`: a broadcast to N
//! connections queues N handles to one payload (tungstenite then copies it into each
//! connection's write buffer as it frames it; that copy is inherent to tungstenite's write
//! path).
//!
//! Rooms and users are [`Groups`]: a map behind an `RwLock`, each group with its own
//! `RwLock`ed member map, so a broadcast takes two read locks and joins/leaves of different
//! groups hardly contend. Per-sender order holds because a sender publishes its messages one
//! after the other into FIFO mailboxes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::Waker;

use futures_util::task::AtomicWaker;
use tokio_tungstenite::tungstenite::Message;
use ws_server::cli::SlowConsumer;

use crate::ctx::Ctx;

/// A queued message and the bytes it was charged against the budget.
pub type Queued = (Message, usize);

/// A connection's inbound side for messages from other tasks.
///
/// A `Mutex<VecDeque>` plus an `AtomicWaker` rather than a tokio mpsc: an mpsc channel
/// allocates its first block of 32 slots (2 KiB for a `Message`) when it is created, for
/// every reachable connection, idle or not; this costs nothing until a message arrives,
/// and the consumer takes the whole queue in one lock.
#[derive(Debug, Default)]
pub struct Mailbox {
    /// Bytes queued here or in the connection's own queue, not yet handed to tungstenite.
    queued: AtomicUsize,
    /// The connection was told to close with 1008: deliveries are pointless.
    killed: AtomicBool,
    /// The connection has ended.
    closed: AtomicBool,
    messages: Mutex<VecDeque<Queued>>,
    waker: AtomicWaker,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// Full, `--slow-consumer drop`: dropped for this connection.
    Dropped,
    /// Full, `--slow-consumer close`: the connection was told to close.
    Killed,
    /// The connection is closing or gone.
    Gone,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Mailbox {
    /// Charges `cost` bytes if they fit under `limit`.
    pub fn try_reserve(&self, cost: usize, limit: usize) -> bool {
        self.queued
            .fetch_update(Relaxed, Relaxed, |q| {
                q.checked_add(cost).filter(|n| *n <= limit)
            })
            .is_ok()
    }

    /// Bytes charged and not yet handed to tungstenite.
    pub fn queued(&self) -> usize {
        self.queued.load(Relaxed)
    }

    pub fn release(&self, cost: usize) {
        self.queued.fetch_sub(cost, Relaxed);
    }

    /// Tells the connection to close with 1008, once; counts it. False if already told.
    pub fn kill(&self, ctx: &Ctx) -> bool {
        if self.killed.swap(true, Relaxed) {
            return false;
        }
        ctx.count_slow_close();
        self.waker.wake();
        true
    }

    /// Queues `msg` (charged `cost` bytes) under the budget and the slow-consumer policy.
    pub fn deliver(&self, ctx: &Ctx, msg: &Message, cost: usize) -> Delivery {
        if self.killed.load(Relaxed) || self.closed.load(Relaxed) {
            return Delivery::Gone;
        }
        if !self.try_reserve(cost, ctx.settings.send_queue_bytes) {
            return match ctx.settings.slow_consumer {
                SlowConsumer::Drop => {
                    ctx.stats().slow_consumer_drops.inc();
                    Delivery::Dropped
                }
                SlowConsumer::Close => {
                    self.kill(ctx);
                    Delivery::Killed
                }
            };
        }
        lock(&self.messages).push_back((msg.clone(), cost));
        self.waker.wake();
        Delivery::Queued
    }

    /// Consumer side: registers `waker`, then moves everything queued to the end of `out`.
    /// Err if the connection was told to close.
    pub fn take_into(&self, waker: &Waker, out: &mut VecDeque<Queued>) -> Result<(), ()> {
        self.waker.register(waker);
        if self.killed.load(Relaxed) {
            return Err(());
        }
        let mut q = lock(&self.messages);
        if q.is_empty() {
            return Ok(());
        }
        if out.is_empty() {
            std::mem::swap(&mut *q, out);
        } else {
            out.append(&mut q);
        }
        Ok(())
    }

    /// The connection has ended: refuse further deliveries, free what is queued.
    pub fn close(&self) {
        self.closed.store(true, Relaxed);
        *lock(&self.messages) = VecDeque::new();
    }
}

/// Connection ids, unique for the life of the process.
pub type ConnId = u64;

type Members = HashMap<ConnId, Arc<Mailbox>>;

/// Named groups of mailboxes (rooms, or the connections of one user).
#[derive(Default)]
pub struct Groups {
    map: RwLock<HashMap<String, Arc<RwLock<Members>>>>,
}

/// Lock helpers that shrug off poisoning: nothing panics while holding these locks, and a
/// registry is still consistent if something did.
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Groups {
    pub fn join(&self, name: &str, id: ConnId, mb: Arc<Mailbox>) {
        {
            // Fast path: the group exists. The outer read lock is held while inserting so
            // a concurrent leave cannot remove the group in between.
            let map = read(&self.map);
            if let Some(g) = map.get(name) {
                write(g).insert(id, mb);
                return;
            }
        }
        let mut map = write(&self.map);
        let g = map.entry(name.to_string()).or_default();
        write(g).insert(id, mb);
    }

    pub fn leave(&self, name: &str, id: ConnId) {
        let now_empty = {
            let map = read(&self.map);
            let Some(g) = map.get(name) else { return };
            let mut members = write(g);
            members.remove(&id);
            members.is_empty()
        };
        if now_empty {
            let mut map = write(&self.map);
            // Re-check under the outer write lock: someone may have joined meanwhile.
            if map.get(name).is_some_and(|g| read(g).is_empty()) {
                map.remove(name);
            }
        }
    }

    /// Delivers `msg` to every member but `except`. None if the group does not exist.
    pub fn send(
        &self,
        ctx: &Ctx,
        name: &str,
        msg: &Message,
        except: Option<ConnId>,
    ) -> Option<u64> {
        let g = read(&self.map).get(name)?.clone();
        let cost = frame_cost(msg);
        let mut delivered = 0;
        for (id, mb) in read(&g).iter() {
            if Some(*id) == except {
                continue;
            }
            if mb.deliver(ctx, msg, cost) == Delivery::Queued {
                delivered += 1;
            }
        }
        ctx.stats().deliveries.add(delivered);
        Some(delivered)
    }
}

/// Rooms, users and the id counter.
#[derive(Default)]
pub struct Hub {
    pub rooms: Groups,
    pub users: Groups,
    next_id: AtomicU64,
}

impl Hub {
    pub fn next_id(&self) -> ConnId {
        self.next_id.fetch_add(1, Relaxed)
    }

    /// Publishes into a room; returns the number of deliveries (0 for an empty room).
    pub fn broadcast(&self, ctx: &Ctx, room: &str, msg: &Message, except: Option<ConnId>) -> u64 {
        ctx.stats().broadcasts_in.inc();
        self.rooms.send(ctx, room, msg, except).unwrap_or(0)
    }

    /// Pushes to every connection of `user`; returns the number of deliveries (0 is a
    /// miss, answered 404, as ws-server: no connection, or every one of them full).
    pub fn push(&self, ctx: &Ctx, user: &str, msg: &Message) -> u64 {
        let n = self.users.send(ctx, user, msg, None).unwrap_or(0);
        if n == 0 {
            ctx.stats().push_misses.inc();
        } else {
            ctx.stats().push_hits.inc();
        }
        n
    }
}

/// Bytes a server data frame of this message takes on the wire (header + payload): what a
/// queued message is charged against `--send-queue-bytes`.
pub fn frame_cost(msg: &Message) -> usize {
    let n = msg.len();
    let header = if n < 126 {
        2
    } else if n <= u16::MAX as usize {
        4
    } else {
        10
    };
    header + n
}
