// knex migration: creates table users.
exports.up = function (knex) {
  return knex.schema.createTable("users", (t) => {
    t.increments("id");
    t.text("email").notNullable();
  });
};

exports.down = function (knex) {
  return knex.schema.dropTable("users");
};
