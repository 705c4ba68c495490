// gorilla-broadcast: the broadcast server most Go services start from (gorilla/websocket's
// chat example: one hub goroutine, a read pump and a write pump per connection), with
// rooms. GET /broadcast?room=R subscribes; every message a client sends goes to every
// connection of its room, the sender included unless ?echo=false. It is the independent
// peer the broadcast accounting of ws-loadgen is checked against.
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o gorilla-broadcast bench/go/gorilla-broadcast/main.go
//	gorilla-broadcast -listen 127.0.0.1:9400
package main

import (
	"flag"
	"log"
	"net/http"

	"github.com/gorilla/websocket"
)

type client struct {
	room string
	echo bool
	send chan []byte
}

type message struct {
	from *client
	data []byte
}

type hub struct {
	rooms      map[string]map[*client]bool
	register   chan *client
	unregister chan *client
	broadcast  chan message
}

func (h *hub) run() {
	for {
		select {
		case c := <-h.register:
			if h.rooms[c.room] == nil {
				h.rooms[c.room] = map[*client]bool{}
			}
			h.rooms[c.room][c] = true
		case c := <-h.unregister:
			if _, ok := h.rooms[c.room][c]; ok {
				delete(h.rooms[c.room], c)
				close(c.send)
			}
		case m := <-h.broadcast:
			for c := range h.rooms[m.from.room] {
				if c == m.from && !c.echo {
					continue
				}
				select {
				case c.send <- m.data:
				default: // a slow consumer is dropped, as in the example
					delete(h.rooms[c.room], c)
					close(c.send)
				}
			}
		}
	}
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func main() {
	listen := flag.String("listen", "127.0.0.1:9400", "address to listen on")
	flag.Parse()
	h := &hub{rooms: map[string]map[*client]bool{}, register: make(chan *client),
		unregister: make(chan *client), broadcast: make(chan message, 1024)}
	go h.run()
	http.HandleFunc("/broadcast", func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		q := r.URL.Query()
		c := &client{room: q.Get("room"), echo: q.Get("echo") != "false", send: make(chan []byte, 256)}
		h.register <- c
		go func() { // write pump
			for m := range c.send {
				if conn.WriteMessage(websocket.BinaryMessage, m) != nil {
					break
				}
			}
			conn.Close()
		}()
		for { // read pump
			_, m, err := conn.ReadMessage()
			if err != nil {
				break
			}
			h.broadcast <- message{from: c, data: m}
		}
		h.unregister <- c
		conn.Close()
	})
	log.Printf("listening on %s", *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}
