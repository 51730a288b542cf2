// knex migration: creates table posts, referencing users.
exports.up = function (knex) {
  return knex.schema.createTable("posts", (t) => {
    t.increments("id");
    t.integer("user_id").references("id").inTable("users");
    t.text("title").notNullable();
  });
};

exports.down = function (knex) {
  return knex.schema.dropTable("posts");
};
