package engine

// drr is the driver lane's queue: deficit round robin keyed by driver
// (Shreedhar & Varghese), so that one driver's backlog — a phone flushing
// 10,000 buffered points after a tunnel — does not hold every other
// driver's points behind it. Each driver with something queued has a FIFO
// of its own (its points stay in seq order, so durable_seq stays a
// prefix); a driver with nothing queued has no state at all, so the state
// is bounded by the lane's bound, not by the fleet.
//
// Each round a driver may take quantum points; an item is never split, so
// a 512-point chunk overdraws a smaller deficit and the driver waits its
// next turn to pay it back. As in fq_codel, a driver that becomes
// backlogged joins the new flows, served before the old ones: a quiet
// driver's first points go ahead of every backlog in its round; at most
// freshBurst items in a row, so that old flows always progress.
//
// Items put back after a store reopen (requeue) go to a front FIFO served
// before any driver, in their order.
//
// Not safe for concurrent use: the lane's mutex guards it.
type drr struct {
	quantum int
	flows   map[string]*flow // backlogged drivers only
	fresh   flowList         // new flows: served first
	old     flowList         // flows that used a quantum already
	front   []*item          // requeued items, served before the flows
	next    *flow            // the flow peek chose; pop serves it
	nextIn  *flowList        // the list next heads
	items   int              // items queued in the flows
	spare   []*flow          // emptied flows kept for reuse (allocation-free steady state)
	streak  int              // items served from fresh flows in a row while old flows waited
}

// freshBurst bounds how many items new flows take in a row while old flows
// wait: new flows go first (a quiet driver's point is not held behind a
// backlog), but a stream of ever-new drivers cannot starve a backlogged one
// (with 100,000 drivers, unlike fq_codel's 1,024 buckets, new flows never
// run out).
const freshBurst = 64

// flow is one backlogged driver: its FIFO and its deficit.
type flow struct {
	key     string
	q       []*item
	head    int
	deficit int
}

// flowList is a FIFO of flows.
type flowList = fifo[*flow]

func newDRR(quantum int) *drr {
	return &drr{quantum: quantum, flows: map[string]*flow{}}
}

// push queues it at the tail of its driver's FIFO.
func (d *drr) push(it *item) {
	f := d.flows[it.flow]
	if f == nil {
		if n := len(d.spare); n > 0 {
			f = d.spare[n-1]
			d.spare[n-1] = nil
			d.spare = d.spare[:n-1]
		} else {
			f = &flow{}
		}
		f.key, f.deficit = it.flow, d.quantum
		d.flows[it.flow] = f
		d.fresh.add(f)
	}
	f.q = append(f.q, it)
	d.items++
}

// requeue puts items ahead of everything queued, in their order.
func (d *drr) requeue(items []*item) {
	if len(items) == 0 {
		return
	}
	d.front = append(append(make([]*item, 0, len(items)+len(d.front)), items...), d.front...)
}

// choose returns the flow that gives the next item, refilling deficits
// and rotating flows as the round requires, or nil when nothing is queued.
// Its choice holds until pop: a flow that arrives meanwhile does not
// change what peek promised.
func (d *drr) choose() *flow {
	if d.next != nil {
		return d.next
	}
	if d.items == 0 {
		return nil
	}
	for {
		l := &d.fresh
		if l.empty() || !d.old.empty() && d.streak >= freshBurst {
			l = &d.old
		}
		f := l.first()
		if f.deficit <= 0 {
			// Its quantum is spent: refill it and send it to the end of
			// the round.
			f.deficit += d.quantum
			l.drop()
			d.old.add(f)
			continue
		}
		d.next, d.nextIn = f, l
		return f
	}
}

// peek returns the item pop returns next, or nil.
func (d *drr) peek() *item {
	if len(d.front) > 0 {
		return d.front[0]
	}
	if f := d.choose(); f != nil {
		return f.q[f.head]
	}
	return nil
}

// pop takes the next item, or nil.
func (d *drr) pop() *item {
	if len(d.front) > 0 {
		it := d.front[0]
		d.front[0] = nil
		d.front = d.front[1:]
		if len(d.front) == 0 {
			d.front = nil
		}
		return it
	}
	f := d.choose()
	if f == nil {
		return nil
	}
	l := d.nextIn
	d.next, d.nextIn = nil, nil
	if l == &d.fresh && !d.old.empty() {
		d.streak++
	} else {
		d.streak = 0
	}
	it := f.q[f.head]
	f.q[f.head] = nil
	f.head++
	f.deficit -= it.units
	d.items--
	if f.head == len(f.q) {
		// Empty: no state while not backlogged. It is at the front of
		// its list (only the front flow is served).
		l.drop()
		delete(d.flows, f.key)
		f.key, f.head, f.deficit = "", 0, 0
		if cap(f.q) > 64 {
			f.q = nil
		} else {
			f.q = f.q[:0]
		}
		if len(d.spare) < 256 {
			d.spare = append(d.spare, f)
		}
	} else if f.head > 64 && f.head*2 > len(f.q) {
		n := copy(f.q, f.q[f.head:])
		clear(f.q[n:])
		f.q, f.head = f.q[:n], 0
	}
	return it
}

// waiting reports whether an item is queued.
func (d *drr) waiting() bool { return d.items > 0 || len(d.front) > 0 }
