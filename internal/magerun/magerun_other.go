//go:build !unix

package magerun

import "github.com/magefile/mage/mage"

// runTargets runs mage as it is: without Unix process groups, locks and
// exec there is nothing to add.
func runTargets(inv mage.Invocation) int { return mage.Invoke(inv) }

func serialized(_ mage.Invocation, fn func() int) int { return fn() }
