package engine

// fifo is a queue on a slice that reuses its array: a popped slot is
// cleared (nothing is kept alive by it), and the waiting part moves to the
// front once it is the smaller half, so that the array does not grow with
// the queue's history.
type fifo[T any] struct {
	s    []T
	head int
}

func (q *fifo[T]) empty() bool { return q.head == len(q.s) }

func (q *fifo[T]) first() T { return q.s[q.head] }

func (q *fifo[T]) add(v T) { q.s = append(q.s, v) }

// drop removes the first element.
func (q *fifo[T]) drop() {
	var zero T
	q.s[q.head] = zero
	q.head++
	if q.head == len(q.s) {
		q.s, q.head = q.s[:0], 0
	} else if q.head > 64 && q.head*2 > len(q.s) {
		n := copy(q.s, q.s[q.head:])
		clear(q.s[n:])
		q.s, q.head = q.s[:n], 0
	}
}

// reset empties the queue.
func (q *fifo[T]) reset() {
	clear(q.s)
	q.s, q.head = q.s[:0], 0
}
