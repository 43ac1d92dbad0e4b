// Package riverjob is the one owner of SQL on River's river_job table: the
// kind and arguments of Ordo's task run jobs, and every statement (or SQL
// fragment of a larger statement) that reads or writes River's jobs beside
// River's own client. Other packages call its functions instead of writing
// river_job themselves.
//
// It depends on nothing of Ordo's; it must never import River's
// client, eventstore, commands, jobs, projections or api.
package riverjob
