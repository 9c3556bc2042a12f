// Package devices holds what every pure device model shares: the interrupt
// line a model raises. Models never import KVM; the VMM wires a Line to the
// in-kernel irqchip.
package devices

// Line is one interrupt input of the platform's interrupt controller.
// SetLevel drives the line high or low; an edge-triggered source (an ISA
// UART) pulses it with Pulse.
type Line interface {
	SetLevel(high bool)
}

// Pulse raises and lowers l: one edge for an edge-triggered input.
func Pulse(l Line) {
	l.SetLevel(true)
	l.SetLevel(false)
}

// NoLine is a Line connected to nothing, for models used without interrupts.
type NoLine struct{}

// SetLevel does nothing.
func (NoLine) SetLevel(bool) {}
