package domain

import (
	"fmt"
	"slices"
	"strings"
)

// graph returns, for each task by spec index, the indexes of the tasks that
// depend on it (in spec order) and its number of dependencies. Unknown,
// self and repeated dependencies are left out.
func (f FlowSpec) graph() (down [][]int, indegree []int) {
	index := make(map[string]int, len(f.Tasks))
	for i, t := range f.Tasks {
		if _, dup := index[t.Name]; !dup {
			index[t.Name] = i
		}
	}
	down = make([][]int, len(f.Tasks))
	indegree = make([]int, len(f.Tasks))
	for i, t := range f.Tasks {
		for j, dep := range t.DependsOn {
			up, ok := index[dep]
			if !ok || up == i || slices.Contains(t.DependsOn[:j], dep) {
				continue
			}
			down[up] = append(down[up], i)
			indegree[i]++
		}
	}
	return down, indegree
}

// checkCycles reports dependency cycles, at most maxCycles of them, each as
// "cycle: a -> b -> a" where an arrow points from a task to one that depends
// on it.
func (f FlowSpec) checkCycles(p *Problems, prefix string) {
	const maxCycles = 10
	down, _ := f.graph()
	const (
		unvisited = iota
		onStack
		done
	)
	state := make([]uint8, len(f.Tasks))
	pos := make([]int, len(f.Tasks)) // position on the stack
	var stack []int
	found := 0
	var visit func(i int)
	visit = func(i int) {
		state[i], pos[i] = onStack, len(stack)
		stack = append(stack, i)
		for _, j := range down[i] {
			if found == maxCycles {
				break
			}
			switch state[j] {
			case unvisited:
				visit(j)
			case onStack:
				found++
				cycle := slices.Clone(stack[pos[j]:])
				first := slices.Index(cycle, slices.Min(cycle))
				cycle = append(cycle[first:], cycle[:first]...)
				names := make([]string, 0, len(cycle)+1)
				for _, k := range cycle {
					names = append(names, f.Tasks[k].Name)
				}
				names = append(names, names[0])
				head, last := f.Tasks[cycle[0]], f.Tasks[cycle[len(cycle)-1]].Name
				p.Add(fmt.Sprintf("%stasks[%d].depends_on[%d]", prefix, cycle[0], slices.Index(head.DependsOn, last)),
					"cycle: %s", strings.Join(names, " -> "))
			}
		}
		stack = stack[:len(stack)-1]
		state[i] = done
	}
	for i := range f.Tasks {
		if state[i] == unvisited && found < maxCycles {
			visit(i)
		}
	}
}

// Task returns the task with the given name.
func (f FlowSpec) Task(name string) (TaskSpec, bool) {
	for _, t := range f.Tasks {
		if t.Name == name {
			return t, true
		}
	}
	return TaskSpec{}, false
}

// Roots returns the tasks that depend on no other task, in spec order.
func (f FlowSpec) Roots() []string {
	var roots []string
	for _, t := range f.Tasks {
		if len(t.DependsOn) == 0 {
			roots = append(roots, t.Name)
		}
	}
	return roots
}

// Downstream maps each task that others depend on to those tasks, in spec
// order.
func (f FlowSpec) Downstream() map[string][]string {
	down, _ := f.graph()
	m := make(map[string][]string)
	for i, ds := range down {
		for _, j := range ds {
			m[f.Tasks[i].Name] = append(m[f.Tasks[i].Name], f.Tasks[j].Name)
		}
	}
	return m
}

// TopoOrder returns the task names so that every task comes after the tasks
// it depends on; among tasks that are ready together, spec order decides.
// Tasks on a cycle (which Validate rejects) are left out.
func (f FlowSpec) TopoOrder() []string {
	down, indegree := f.graph()
	queue := make([]int, 0, len(f.Tasks))
	for i, n := range indegree {
		if n == 0 {
			queue = append(queue, i)
		}
	}
	order := make([]string, 0, len(f.Tasks))
	for k := 0; k < len(queue); k++ {
		i := queue[k]
		order = append(order, f.Tasks[i].Name)
		for _, j := range down[i] {
			if indegree[j]--; indegree[j] == 0 {
				queue = append(queue, j)
			}
		}
	}
	return order
}
