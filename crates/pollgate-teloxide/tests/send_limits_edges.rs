//! Edges of `SendLimiter`'s booking found in review, kept as regression tests (public API
//! only; the limiter's state is read through its `Debug` output). Paused time throughout.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use pollgate_teloxide::SendLimiter;
use tokio::time::Instant;

/// Polls `f` once.
async fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    let mut f = Some(f);
    std::future::poll_fn(|cx| Poll::Ready(f.take().unwrap().poll(cx))).await
}

/// Instants held anywhere in the limiter's state.
fn instants(l: &SendLimiter) -> usize {
    format!("{l:?}").matches("Instant").count()
}

/// A booking whose update sends nothing (the `pacer` doc's `sends_to` is `Update::ordering_key`:
/// every message books, a handler that answers only some of them) must not stay for ever:
/// a sweep runs only once the limiter knows many chats, so `book` gives a chat's stale
/// bookings back itself.
#[tokio::test(start_paused = true)]
async fn bookings_never_taken_do_not_pile_up() {
    let l = SendLimiter::telegram();
    for chat in 1..=10 {
        l.book(chat);
    }
    tokio::time::advance(Duration::from_secs(2)).await;
    let early = instants(&l);
    for _ in 0..10_000 {
        for chat in 1..=10 {
            l.book(chat);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
    }
    let late = instants(&l);
    assert!(
        late <= early + 100,
        "10 chats, at most one send a chat within any window, yet the state holds {late} \
         instants (it held {early} after the first round)"
    );
}

/// A later booking may fill an earlier gap (a slot given back by a dropped wait, or a
/// stale booking): with chat 1's bookings made at 3150 ms, then 1050 ms, its update due
/// at 1050 ms must take its own booking without a wait (bookings are kept sorted, not in
/// the order they were made).
#[tokio::test(start_paused = true)]
async fn a_due_booking_made_after_a_later_one_of_its_chat_is_taken() {
    // 1 a second overall keeps the numbers small (windows are 1050 ms with the margin).
    let l = SendLimiter::new(1, 1, 20);
    let t0 = Instant::now();
    let ms = |t: Instant| (t - t0).as_millis();
    assert_eq!(ms(l.book(10)), 0);
    {
        // Two handlers wait for their slots (1050, 2100), then are cancelled (handler
        // timeout, drain deadline): their slots are given back.
        let mut x = pin!(l.acquire(11));
        let mut y = pin!(l.acquire(12));
        assert!(poll_once(x.as_mut()).await.is_pending());
        assert!(poll_once(y.as_mut()).await.is_pending());
        assert_eq!(ms(l.book(1)), 3150, "chat 1's first booking, behind both waits");
    }
    assert_eq!(ms(l.book(1)), 1050, "chat 1's second booking fills the gap");
    tokio::time::advance(Duration::from_millis(1050)).await;
    // The update paced to 1050 ms starts on time and sends.
    l.acquire(1).await;
    assert_eq!(
        ms(Instant::now()),
        1050,
        "chat 1 had a booking due at 1050 ms, yet acquire booked another slot and waited"
    );
}
