CREATE TABLE "users" (
	"id" serial PRIMARY KEY NOT NULL,
	"email" text
);
