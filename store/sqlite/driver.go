package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// OpenDB opens the SQLite database file at path through the native SQLite
// library and runs each pragma (such as "journal_mode = WAL") on every
// connection the pool opens. The pipeline's state store uses it as well.
func OpenDB(path string, pragmas ...string) *sql.DB {
	return sql.OpenDB(&connector{dsn: path, pragmas: pragmas})
}

// connector opens connections to one database file with its pragmas set.
type connector struct {
	dsn     string
	pragmas []string
	drv     sqlite3.SQLiteDriver
}

// Connect opens one connection and applies the pragmas.
func (c *connector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	sc := conn.(*sqlite3.SQLiteConn)
	for _, p := range c.pragmas {
		if _, err := sc.Exec("PRAGMA "+p, nil); err != nil {
			sc.Close()
			return nil, fmt.Errorf("PRAGMA %s: %w", p, err)
		}
	}
	return conn, nil
}

// Driver returns the SQLite driver.
func (c *connector) Driver() driver.Driver { return &c.drv }
