//! The encode side of a 16 MiB invocation (issue 15: at most two copies of a payload
//! alive per request): kaas's codec writes the message into one buffer reserved for all of
//! it, where tonic's prost encoder grew the buffer to the payload's size and doubled it
//! for the next field — 32 MiB allocated and 16 MiB copied on top of the 16 MiB it held.
//! Heap bytes are counted by this binary's allocator (one test: nothing else allocates).

// The counting allocator forwards to the system's: the only unsafe code here.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::BodyExt;
use kaas_executor::codec::SizedCodec;
use kaas_executor::proto::{ExecuteRequest, ExecuteResponse};
use prost::Message;
use tonic::codec::{Codec, EncodeBody};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // Old and new block both alive while it moves: counted so.
        let now = LIVE.fetch_add(new, Ordering::Relaxed) + new;
        PEAK.fetch_max(now, Ordering::Relaxed);
        let q = unsafe { System.realloc(p, l, new) };
        LIVE.fetch_sub(if q.is_null() { new } else { l.size() }, Ordering::Relaxed);
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const PAYLOAD: usize = 16 << 20;

#[tokio::test(flavor = "current_thread")]
async fn a_16_mib_request_is_encoded_into_one_buffer_of_its_size() {
    let req = ExecuteRequest {
        namespace: "t".into(),
        name: "f".into(),
        inputs: [("in".to_string(), Bytes::from(vec![7u8; PAYLOAD]))].into(),
        deadline_ms: 5,
        share_id: "s".into(),
        device: "d".into(),
    };
    let want = req.encoded_len();
    let source = tokio_stream::once(Ok::<_, tonic::Status>(req.clone()));
    let encoder = SizedCodec::<ExecuteRequest, ExecuteResponse>::default().encoder();
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let body = EncodeBody::new_client(encoder, source, None, None);
    let framed = body.collect().await.unwrap().to_bytes();
    let grew = PEAK.load(Ordering::Relaxed) - before;
    println!(
        "encoding {want} bytes allocated at most {grew} at once ({:.2} payloads)",
        grew as f64 / PAYLOAD as f64
    );
    assert_eq!(framed.len(), 5 + want, "one gRPC frame: header and message");
    assert_eq!(ExecuteRequest::decode(&framed[5..]).unwrap(), req, "it decodes to what was sent");
    assert!(
        grew < PAYLOAD + PAYLOAD / 8,
        "{grew} bytes alive at once to encode a {PAYLOAD}-byte payload: more than one buffer"
    );
}
