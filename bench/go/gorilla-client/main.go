// gorilla-client: the load generator most people would write in Go with gorilla/websocket:
// one goroutine per connection writing on a ticker and one reading (the seed's style).
// scripts/compare.sh's load-generator section runs it next to ws-loadgen, k6 and
// tokio-ws-client against the same server. Each message carries its intended send time
// (the ticker's tick), so the round trip includes any delay the client itself adds.
//
// Build in GOPATH mode with Debian's packages (golang-go, golang-github-gorilla-websocket-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o gorilla-client bench/go/gorilla-client/main.go
//
// The last line on stdout is one JSON object.
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// Log-linear latency buckets (16 per power of two, from 1 µs): one shared array of atomic
// counters, so per-connection state stays what a naive client has.
const sub = 16
const nBuckets = 40 * sub

var buckets [nBuckets]uint64

func record(d time.Duration) {
	us := float64(d.Nanoseconds()) / 1000
	if us < 1 {
		us = 1
	}
	i := int(math.Log2(us) * sub)
	if i >= nBuckets {
		i = nBuckets - 1
	}
	atomic.AddUint64(&buckets[i], 1)
}

func quantile(q float64) float64 {
	var total uint64
	for i := range buckets {
		total += atomic.LoadUint64(&buckets[i])
	}
	if total == 0 {
		return 0
	}
	want := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i := range buckets {
		seen += buckets[i]
		if seen >= want {
			return math.Pow(2, float64(i+1)/sub) // upper edge, µs
		}
	}
	return 0
}

func main() {
	url := flag.String("url", "ws://127.0.0.1:9001/ws", "server URL")
	conns := flag.Int("c", 1000, "connections")
	rate := flag.Float64("rate", 2, "messages per second per connection (open loop)")
	closed := flag.Bool("closed-loop", false, "send the next message when the previous one is back")
	size := flag.Int("size", 64, "message size in bytes (>= 8)")
	dur := flag.Duration("d", 15*time.Second, "how long to send, once all connections are open")
	flag.Parse()
	if *size < 8 {
		fmt.Fprintln(os.Stderr, "gorilla-client: -size must be at least 8")
		os.Exit(2)
	}

	start := time.Now()
	var sent, received, failed uint64
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	open := make([]*websocket.Conn, 0, *conns)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for i := 0; i < *conns; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, _, err := dialer.Dial(*url, nil)
			if err != nil {
				atomic.AddUint64(&failed, 1)
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	opened := time.Since(start)

	stop := time.Now().Add(*dur)
	var done sync.WaitGroup
	for _, c := range open {
		done.Add(1)
		c := c
		if *closed {
			go func() {
				defer done.Done()
				msg := make([]byte, *size)
				for time.Now().Before(stop) {
					t := time.Now()
					binary.LittleEndian.PutUint64(msg, uint64(t.UnixNano()))
					if c.WriteMessage(websocket.BinaryMessage, msg) != nil {
						return
					}
					atomic.AddUint64(&sent, 1)
					if _, _, err := c.ReadMessage(); err != nil {
						return
					}
					atomic.AddUint64(&received, 1)
					record(time.Since(t))
				}
			}()
			continue
		}
		go func() { // reader
			for {
				_, m, err := c.ReadMessage()
				if err != nil {
					return
				}
				if len(m) >= 8 {
					atomic.AddUint64(&received, 1)
					record(time.Since(time.Unix(0, int64(binary.LittleEndian.Uint64(m)))))
				}
			}
		}()
		go func() { // writer
			defer done.Done()
			period := time.Duration(float64(time.Second) / *rate)
			time.Sleep(time.Duration(rand.Int63n(int64(period))))
			tick := time.NewTicker(period)
			defer tick.Stop()
			msg := make([]byte, *size)
			for t := range tick.C {
				if t.After(stop) {
					return
				}
				binary.LittleEndian.PutUint64(msg, uint64(t.UnixNano()))
				if c.WriteMessage(websocket.BinaryMessage, msg) != nil {
					return
				}
				atomic.AddUint64(&sent, 1)
			}
		}()
	}
	done.Wait()
	time.Sleep(500 * time.Millisecond) // the last echoes
	for _, c := range open {
		c.Close()
	}

	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	out, _ := json.Marshal(map[string]interface{}{
		"client":        "gorilla",
		"connections":   len(open),
		"failed":        failed,
		"open_seconds":  opened.Seconds(),
		"sent":          sent,
		"received":      received,
		"p50_us":        quantile(0.50),
		"p99_us":        quantile(0.99),
		"cpu_seconds":   cpu,
		"max_rss_bytes": ru.Maxrss * 1024,
	})
	fmt.Println(string(out))
}
