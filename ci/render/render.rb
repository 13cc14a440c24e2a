#!/usr/bin/env ruby
# frozen_string_literal: true

# Renders a BOSH release's job templates for one instance of a deployment, the
# way the BOSH director does, so that tests and the local cluster use the
# release's real templates.
#
#   ci/render/render.rb --release release --manifest ci/deployments/ha.yml \
#                       --instance postgres/0 --out DIR
#   ci/render/render.rb --release release --manifest M --list
#
# For each job of the instance it writes DIR/<job>/<destination> for every
# template in the job's spec (files under bin/ are made executable, as the
# BOSH agent does). What the director provides is emulated:
#
# - properties: only those declared in the job spec, each from the manifest's
#   job properties or else the spec default; `p(name)`, `p(name, default)`,
#   `p([names...])`, `if_p(*names) { } .else { }`;
# - `spec`: index, address, ip, bootstrap, name, id, az, deployment, networks,
#   job.name;
# - links: `link(name)`, `if_link(name) { } .else { }`, with `instances`
#   (address, index, bootstrap, id, az, name), `p`, `if_p`; resolved by
#   explicit `consumes: {name: {from: ...}}`, else by link type, preferring a
#   provider in the same instance group;
# - ERB with trim_mode '-'.
#
# Instance addresses are the network's static_ips in order, else
# 10.244.<group number>.<index + 2>. Exit status 1 with one line naming the
# instance, job and template on any rendering error.

require 'erb'
require 'fileutils'
require 'optparse'
require 'ostruct'
require 'yaml'

module Render
  class Error < StandardError; end

  # Raised by p() for a property that is neither set nor defaulted.
  class UnknownProperty < Error
    def initialize(names)
      super("Can't find property '#{Array(names).join("', or '")}'")
    end
  end

  # Looks up a dotted name ("a.b.c") in nested hashes; nil when absent.
  def self.dig(hash, name)
    name.split('.').reduce(hash) do |node, key|
      return nil unless node.is_a?(Hash) && node.key?(key)

      node[key]
    end
  end

  def self.assign(hash, name, value)
    *parents, last = name.split('.')
    node = parents.reduce(hash) { |h, key| h[key] ||= {} }
    node[last] = value
  end

  # The properties a job sees: declared ones only, manifest value or default.
  def self.effective_properties(spec, given)
    (spec['properties'] || {}).each_with_object({}) do |(name, definition), result|
      value = dig(given || {}, name)
      value = (definition || {})['default'] if value.nil?
      assign(result, name, deep_copy(value)) unless value.nil?
    end
  end

  # The first line of an error, without the receiver that Ruby's NameError
  # appends ("... for #<Render::Context ...>"): it would print every property,
  # passwords included.
  def self.first_line(error)
    error.message.lines.first.to_s.sub(/ for #<.*/m, '').strip
  end

  def self.deep_copy(value)
    Marshal.load(Marshal.dump(value))
  end

  # `if_p` / `if_link` return one of these so `.else { }` can follow.
  class ActiveElseBlock
    def initialize(context)
      @context = context
    end

    def else
      yield
    end

    def else_if_p(*names, &block)
      @context.if_p(*names, &block)
    end
  end

  class InactiveElseBlock
    def else; end

    def else_if_p(*_names)
      InactiveElseBlock.new
    end
  end

  # Property access shared by the template context and links.
  module PropertyLookup
    def p(*args)
      names = Array(args[0])
      names.each do |name|
        value = Render.dig(@properties, name)
        return value unless value.nil?
      end
      return args[1] if args.length == 2

      raise UnknownProperty, names
    end

    def if_p(*names)
      values = names.map { |name| Render.dig(@properties, name) }
      return ActiveElseBlock.new(self) if values.any?(&:nil?)

      yield(*values)
      InactiveElseBlock.new
    end
  end

  LinkInstance = Struct.new(:name, :index, :id, :az, :address, :bootstrap, keyword_init: true)

  class Link
    include PropertyLookup
    attr_reader :instances, :properties

    def initialize(instances, properties)
      @instances = instances
      @properties = properties
    end

    def address
      @instances.first&.address
    end
  end

  # The object templates are evaluated against.
  class Context
    include PropertyLookup
    attr_reader :spec, :properties

    def initialize(spec, properties, links)
      @spec = spec
      @properties = properties
      @links = links
    end

    def link(name)
      @links.fetch(name) { raise Error, "Can't find link '#{name}'" }
    end

    def if_link(name)
      return ActiveElseBlock.new(self) unless @links.key?(name)

      yield @links[name]
      InactiveElseBlock.new
    end

    def evaluate(template_text, path)
      erb = ERB.new(template_text, trim_mode: '-')
      erb.filename = path
      erb.result(binding)
    end
  end

  # A deployment manifest plus the release's job specs.
  class Deployment
    def initialize(release_dir, manifest)
      @release_dir = release_dir
      @manifest = manifest
      @groups = manifest.fetch('instance_groups')
    end

    def instance_names
      @groups.flat_map { |group| (0...group.fetch('instances')).map { |i| "#{group['name']}/#{i}" } }
    end

    def job_spec(job_name)
      path = File.join(@release_dir, 'jobs', job_name, 'spec')
      raise Error, "no job '#{job_name}' in #{@release_dir}/jobs" unless File.exist?(path)

      YAML.safe_load(File.read(path), aliases: true)
    end

    # Renders every template of every job of `instance` ("group/index") into out_dir.
    def render_instance(instance, out_dir)
      group_name, index = instance.split('/')
      group = @groups.find { |g| g['name'] == group_name } or raise Error, "no instance group '#{group_name}'"
      index = Integer(index)
      raise Error, "#{instance}: the group has #{group['instances']} instances" unless index < group['instances']

      group.fetch('jobs').each { |job| render_job(group, index, job, out_dir) }
    end

    private

    def render_job(group, index, job, out_dir)
      spec = job_spec(job['name'])
      properties = Render.effective_properties(spec, job['properties'])
      context = Context.new(instance_spec(group, index, job), properties, links_for(group, job, spec))
      (spec['templates'] || {}).each do |source, destination|
        render_template(context, group, index, job['name'], source, destination, out_dir)
      end
      render_monit(context, group, index, job['name'], out_dir)
    end

    # The job's monit file is an ERB template too.
    def render_monit(context, group, index, job_name, out_dir)
      path = File.join(@release_dir, 'jobs', job_name, 'monit')
      return unless File.exist?(path)

      text = context.evaluate(File.read(path), path)
      File.write(File.join(out_dir, job_name, 'monit'), text)
    rescue StandardError, ScriptError => e
      raise Error, "#{group['name']}/#{index} job #{job_name} monit: #{Render.first_line(e)}"
    end

    def render_template(context, group, index, job_name, source, destination, out_dir)
      path = File.join(@release_dir, 'jobs', job_name, 'templates', source)
      text = context.evaluate(File.read(path), path)
      target = File.join(out_dir, job_name, destination)
      FileUtils.mkdir_p(File.join(out_dir, job_name))
      FileUtils.mkdir_p(File.dirname(target))
      File.write(target, text)
      File.chmod(destination.start_with?('bin/') ? 0o755 : 0o644, target)
    rescue StandardError, ScriptError => e
      raise Error, "#{group['name']}/#{index} job #{job_name} template #{source}: #{Render.first_line(e)}"
    end

    def instance_spec(group, index, job)
      address = address_of(group, index)
      network = (group['networks'] || [{ 'name' => 'default' }]).first['name']
      OpenStruct.new(
        name: group['name'], index: index, id: instance_id(group, index), az: az_of(group, index),
        address: address, ip: address, bootstrap: index.zero?, deployment: @manifest['name'],
        networks: OpenStruct.new(network => OpenStruct.new(ip: address, default: %w[dns gateway])),
        job: OpenStruct.new(name: job['name'])
      )
    end

    def address_of(group, index)
      static = (group['networks'] || []).flat_map { |n| n['static_ips'] || [] }
      static[index] || "10.244.#{@groups.index(group)}.#{index + 2}"
    end

    def instance_id(group, index)
      format('%08x-0000-4000-8000-%012x', @groups.index(group), index)
    end

    def az_of(group, index)
      azs = group['azs'] || ['z1']
      azs[index % azs.length]
    end

    def links_for(group, job, spec)
      (spec['consumes'] || []).each_with_object({}) do |consumed, links|
        provider = link_provider(group, job, consumed)
        links[consumed['name']] = provider if provider
      end
    end

    def link_provider(group, job, consumed)
      explicit = (job['consumes'] || {})[consumed['name']]
      return nil if explicit == 'nil'

      candidates = providers_of(consumed['type'], explicit && explicit['from'])
      chosen = candidates.find { |c| c[:group] == group } || candidates.first
      if chosen.nil?
        return nil if consumed['optional']

        raise Error, "job #{job['name']}: no provider for link '#{consumed['name']}' (type #{consumed['type']})"
      end
      build_link(chosen)
    end

    # Every [group, job, provides-definition] that provides `type` (or is named `from`).
    def providers_of(type, from)
      @groups.flat_map do |group|
        group.fetch('jobs').flat_map do |job|
          (job_spec(job['name'])['provides'] || []).filter_map do |provided|
            alias_name = ((job['provides'] || {})[provided['name']] || {})['as'] || provided['name']
            matches = from ? alias_name == from : provided['type'] == type
            { group: group, job: job, provided: provided } if matches
          end
        end
      end
    end

    def build_link(chosen)
      group = chosen[:group]
      job = chosen[:job]
      all = Render.effective_properties(job_spec(job['name']), job['properties'])
      shared = (chosen[:provided]['properties'] || []).each_with_object({}) do |name, result|
        value = Render.dig(all, name)
        Render.assign(result, name, value) unless value.nil?
      end
      instances = (0...group['instances']).map do |i|
        LinkInstance.new(name: group['name'], index: i, id: instance_id(group, i), az: az_of(group, i),
                         address: address_of(group, i), bootstrap: i.zero?)
      end
      Link.new(instances, shared)
    end
  end

  def self.main(argv)
    options = { release: 'release' }
    OptionParser.new do |o|
      o.banner = 'usage: render.rb --release DIR --manifest FILE (--instance GROUP/INDEX --out DIR | --list)'
      o.on('--release DIR') { |v| options[:release] = v }
      o.on('--manifest FILE') { |v| options[:manifest] = v }
      o.on('--instance NAME') { |v| options[:instance] = v }
      o.on('--out DIR') { |v| options[:out] = v }
      o.on('--list') { options[:list] = true }
    end.parse!(argv)
    raise Error, '--manifest is required' unless options[:manifest]

    manifest = YAML.safe_load(File.read(options[:manifest]), aliases: true)
    deployment = Deployment.new(options[:release], manifest)
    if options[:list]
      puts deployment.instance_names
    else
      raise Error, '--instance and --out are required' unless options[:instance] && options[:out]

      deployment.render_instance(options[:instance], options[:out])
    end
  rescue Error, OptionParser::ParseError, Psych::SyntaxError, Errno::ENOENT, KeyError => e
    warn "render: #{e.message}"
    exit 1
  end
end

Render.main(ARGV) if $PROGRAM_NAME == __FILE__
