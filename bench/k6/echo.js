// k6 echo load, the way a k6 user writes it: one VU per connection, each sending RATE
// messages per second for DURATION seconds and timing the echo. scripts/compare.sh's
// load-generator section runs it next to ws-loadgen against the same server:
//
//   k6 run -q --summary-export out.json -e URL=ws://127.0.0.1:9001/ws -e CONNS=3000 \
//       -e RATE=2 -e DURATION=15 -e SIZE=64 bench/k6/echo.js
//
// Date.now() is the only clock a k6 script has, so the round trip is in whole milliseconds.
import { WebSocket } from 'k6/experimental/websockets';
import { Counter, Trend } from 'k6/metrics';

const URL = __ENV.URL || 'ws://127.0.0.1:9001/ws';
const CONNS = parseInt(__ENV.CONNS || '100');
const RATE = parseFloat(__ENV.RATE || '2');
const DURATION = parseFloat(__ENV.DURATION || '15');
const SIZE = parseInt(__ENV.SIZE || '64');

const sent = new Counter('echo_sent');
const received = new Counter('echo_received');
const rtt = new Trend('echo_rtt', true);

export const options = {
  scenarios: {
    echo: {
      executor: 'per-vu-iterations',
      vus: CONNS,
      iterations: 1,
      maxDuration: `${DURATION + 60}s`,
    },
  },
  summaryTrendStats: ['p(50)', 'p(99)', 'max', 'count'],
};

export default function () {
  const ws = new WebSocket(URL);
  const pad = 'x'.repeat(Math.max(0, SIZE - 14));
  ws.onopen = () => {
    const period = 1000 / RATE;
    const stopAt = Date.now() + DURATION * 1000;
    setTimeout(() => {
      const id = setInterval(() => {
        if (Date.now() >= stopAt) {
          clearInterval(id);
          setTimeout(() => ws.close(), 500);
          return;
        }
        ws.send(String(Date.now()).padStart(13, '0') + ' ' + pad);
        sent.add(1);
      }, period);
    }, Math.random() * period);
  };
  ws.onmessage = (e) => {
    received.add(1);
    rtt.add(Date.now() - parseInt(String(e.data).slice(0, 13)));
  };
  ws.onerror = () => {};
}
