// schema.ts plus a second table and an index: its migration has several
// statements, so drizzle-kit writes "--> statement-breakpoint" between them.
import { index, integer, pgTable, serial, text } from "drizzle-orm/pg-core";

export const users = pgTable("users", {
  id: serial("id").primaryKey(),
  email: text("email"),
}, (t) => [index("users_email_idx").on(t.email)]);

export const posts = pgTable("posts", {
  id: serial("id").primaryKey(),
  userId: integer("user_id").references(() => users.id),
  title: text("title").notNull(),
});
